import numpy as np
import pytest
import torch
import torch.nn.functional as F

from l2bt.anomaly_map import box_pass, image_score, patch_anomaly, smooth, to_image_maps
from l2bt.preprocess import InputGeometry


def reference_box_blur(maps: torch.Tensor, side: int) -> torch.Tensor:
    """Plain 2-D zero-padded mean filter."""
    kernel = torch.ones(1, 1, side, side, dtype=maps.dtype) / side**2
    return F.conv2d(maps, kernel, padding=side // 2)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 1, 3, 8), (1, 1, 13, 7), (3, 1, 16, 16)])
@pytest.mark.parametrize("side", [5, 7])
def test_box_blur_equals_a_plain_zero_padded_mean_filter(shape, side):
    maps = torch.rand(shape, dtype=torch.float64)
    blurred = box_pass(box_pass(maps, side, dim=2), side, dim=3)
    assert torch.allclose(blurred, reference_box_blur(maps, side), atol=1e-12)


def test_smoothing_is_five_5x5_then_three_7x7_blurs():
    maps = torch.rand(1, 1, 20, 11, dtype=torch.float64)
    expected = maps
    for _ in range(5):
        expected = reference_box_blur(expected, 5)
    for _ in range(3):
        expected = reference_box_blur(expected, 7)
    assert torch.allclose(smooth(maps), expected, atol=1e-12)


@pytest.mark.parametrize("height,width", [(30, 45), (45, 30), (31, 31), (17, 40)])
def test_image_maps_are_cropped_from_the_padded_square_at_the_pad_offsets(height, width):
    geometry = InputGeometry.pad(height, width, 56)
    patch_maps = torch.rand(2, 4, 4)
    maps = to_image_maps(patch_maps, geometry)
    assert maps.shape == (2, height, width) and maps.dtype == np.float32
    side = max(height, width)
    full = F.interpolate(
        patch_maps[:, None], size=(side, side), mode="bilinear", align_corners=False
    )
    for _ in range(5):
        full = reference_box_blur(full, 5)
    for _ in range(3):
        full = reference_box_blur(full, 7)
    expected = full[
        :, 0, geometry.top : geometry.top + height, geometry.left : geometry.left + width
    ]
    assert np.allclose(maps, expected.numpy(), atol=1e-6)


def test_a_hot_patch_lands_where_it_is_in_the_original_image():
    # A 20x60 image padded to 60x60: the image occupies rows 20..39 of the square.
    geometry = InputGeometry.pad(20, 60, 84)
    patch_maps = torch.zeros(1, 6, 6)
    patch_maps[0, 2, 5] = 1.0  # square rows 20..29, cols 50..59: the image's right edge
    image_map = to_image_maps(patch_maps, geometry)[0]
    row, col = np.unravel_index(np.argmax(image_map), image_map.shape)
    assert 0 <= row < 10 and col >= 48


def test_image_score_is_the_mean_of_the_top_tenth_of_a_percent():
    rng = np.random.default_rng(1)
    values = rng.random(5000).astype(np.float32)
    expected = np.sort(values)[-5:].mean()  # 0.1 % of 5000 = 5 pixels
    assert image_score(values.reshape(50, 100)) == pytest.approx(expected, rel=1e-6)
    assert image_score(np.full((3, 3), 2.0, np.float32)) == pytest.approx(2.0)  # ties, tiny
    assert image_score(np.array([[7.0]], np.float32)) == pytest.approx(7.0)  # one pixel


def test_patch_anomaly_is_the_product_of_normalised_distances():
    torch.manual_seed(0)
    early, late = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 5, 8)
    forward, backward = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)
    got = patch_anomaly(forward, backward, early, late)
    a = forward(early) / forward(early).norm(dim=-1, keepdim=True)
    b = late / late.norm(dim=-1, keepdim=True)
    c = backward(late) / backward(late).norm(dim=-1, keepdim=True)
    d = early / early.norm(dim=-1, keepdim=True)
    expected = (a - b).norm(dim=-1) * (c - d).norm(dim=-1)
    assert got.shape == (2, 3, 5) and torch.allclose(got, expected, atol=1e-6)
    # A perfect pair of students gives zero anomaly everywhere.
    identity = torch.nn.Identity()
    assert torch.allclose(
        patch_anomaly(identity, identity, early, early), torch.zeros(2, 3, 5), atol=1e-6
    )
