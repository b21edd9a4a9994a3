"""anomaly_map.py: box blurs and the smoothing, image maps cropped at the pad offsets, the
image score, the patch anomaly; and the map made for the kept pixels only against the
full-frame computation, kept here as a plain reference: upsample the patch grid to the
whole frame (each window to T × T and `tiling.stitch`ed, in tiles mode), smooth it all,
crop (and resize). Maps agree to within 1e-6 of the map's peak; image scores to a
relative 1e-6. Inputs are random and seeded; no wall-time assertion."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from l2bt.anomaly_map import (
    BLUR_PASSES,
    SMOOTHING,
    BoxPass,
    box_pass,
    image_score,
    patch_anomaly,
    smooth,
    smoothing_reach,
    to_image_maps,
    top_count,
)
from l2bt.config import TileSettings
from l2bt.methods.dinomaly import GaussianBlur, gaussian_kernel, to_full_resolution
from l2bt.preprocess import InputGeometry
from l2bt.tiling import frame_to_image, stitch
from l2bt.training import new_students


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


PEAK_TOLERANCE = 1e-6  # of the map's peak


def full_frame_maps(patch_maps, geometry, smoothing=SMOOTHING, align_corners=False):
    """Today's road: (B · n, h, w) -> (B, H, W) float32 through the whole frame."""
    if geometry.tiles is not None:
        return np.stack(
            [
                tiled_full_frame(image, geometry.tiles, smoothing, align_corners)
                for image in patch_maps.reshape(-1, geometry.tiles.count, *patch_maps.shape[1:])
            ]
        )
    frame = F.interpolate(
        patch_maps.float()[:, None],
        size=(geometry.frame_height, geometry.frame_width),
        mode="bilinear",
        align_corners=align_corners,
    )
    frame = smooth(frame, smoothing)
    rows = slice(geometry.top, geometry.top + geometry.height)
    cols = slice(geometry.left, geometry.left + geometry.width)
    return frame[:, 0, rows, cols].numpy()


def tiled_full_frame(windows, layout, smoothing, align_corners):
    size = (layout.size, layout.size)
    upsampled = F.interpolate(
        windows.float()[:, None], size=size, mode="bilinear", align_corners=align_corners
    )[:, 0]  # (n, 1, T, T) -> (n, T, T)
    frame = smooth(stitch(upsampled, layout)[None, None], smoothing)
    return frame_to_image(frame, layout).numpy()


def assert_same_maps(new, old):
    assert new.shape == old.shape and new.dtype == np.float32
    peak = np.abs(old).max()
    assert np.abs(new.astype(np.float64) - old).max() <= PEAK_TOLERANCE * peak
    for new_map, old_map in zip(new, old, strict=True):
        assert image_score(new_map) == pytest.approx(image_score(old_map), rel=1e-6)


def random_patch_maps(geometry, images, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(images * geometry.n_inputs, *geometry.grid, generator=generator)


def test_the_reach_is_the_sum_of_the_passes_half_sides():
    half_sides = sum(side // 2 * repetitions for side, repetitions in BLUR_PASSES)
    assert smoothing_reach(SMOOTHING) == (half_sides, half_sides)
    assert smoothing_reach((BoxPass(9, 2), BoxPass(3, 3))) == (4, 1)
    assert smoothing_reach((GaussianBlur(gaussian_kernel(5, 4.0)),) * 2) == (4, 4)


@pytest.mark.parametrize(
    "height,width",
    [
        (645, 1540),
        (1540, 645),
        (20, 100),
        (100, 20),
        (50, 60),
        (31, 31),
        (17, 40),
        (1, 1),
        (3, 200),
    ],
)
@pytest.mark.parametrize("size", [56, 224])
def test_pad_mode_maps_equal_the_full_square(height, width, size):
    # The crop away from the square's edges (20 × 100: 40 rows of padding each side), within
    # the reach of them (50 × 60), or the whole square (31 × 31, 1 × 1).
    geometry = InputGeometry.pad(height, width, size)
    patch_maps = random_patch_maps(geometry, 2, height * width + size)
    assert_same_maps(to_image_maps(patch_maps, geometry), full_frame_maps(patch_maps, geometry))


@pytest.mark.parametrize(
    "height,width", [(460, 1130), (1130, 460), (45, 30), (13, 7), (1, 90), (200, 199)]
)
@pytest.mark.parametrize("size", [56, 224])
def test_aspect_mode_maps_equal_the_full_image(height, width, size):
    # 13 × 7 at 224 px: a 16 × 8 grid on a smaller frame, the resize's scale below 1.
    geometry = InputGeometry.aspect(height, width, size)
    patch_maps = random_patch_maps(geometry, 3, height + width + size)
    assert_same_maps(to_image_maps(patch_maps, geometry), full_frame_maps(patch_maps, geometry))


@pytest.mark.parametrize(
    "height,width,settings",
    [
        (57, 131, TileSettings(28, 7)),  # s = 1, windows overlapping both ways
        (23, 40, TileSettings(28, 7)),  # rows shorter than a window: edge-padded to it
        (20, 25, TileSettings(28, 7)),  # smaller than one window both ways
        (101, 75, TileSettings(28, 7, 0.7)),  # s < 1: the crop resized back to H × W
        (45, 19, TileSettings(28, 7, 0.55)),
        (300, 500, TileSettings(56, None, 0.33)),
        (250, 90, TileSettings(56, 20)),
    ],
)
def test_tiles_mode_maps_equal_the_stitched_frame(height, width, settings):
    geometry = InputGeometry.tiled(height, width, settings)
    patch_maps = random_patch_maps(geometry, 2, height * width)
    assert_same_maps(to_image_maps(patch_maps, geometry), full_frame_maps(patch_maps, geometry))


@pytest.mark.parametrize(
    "geometry",
    [
        InputGeometry.pad(40, 90, 56),
        InputGeometry.pad(90, 85, 56),
        InputGeometry.pad(33, 33, 56),
        InputGeometry.aspect(40, 90, 56),
        InputGeometry.tiled(57, 131, TileSettings(28, 7)),
        InputGeometry.tiled(101, 75, TileSettings(28, 7, 0.7)),
    ],
)
def test_dinomalys_aligned_corners_gaussian_maps_equal_the_full_frame(geometry):
    kernel = gaussian_kernel(5, 4.0)
    patch_maps = random_patch_maps(geometry, 2, geometry.height)
    two_d = (GaussianBlur(kernel),)
    expected = full_frame_maps(patch_maps, geometry, two_d, align_corners=True)
    assert_same_maps(to_full_resolution(patch_maps, geometry, kernel), expected)


def test_a_smoothing_of_other_passes_uses_its_own_reach():
    # Box passes mixed with a 2-D pass: made on the kept pixels ± the passes' reach.
    kernel = gaussian_kernel(3, 1.0)
    smoothing = (BoxPass(7, 2), GaussianBlur(kernel), BoxPass(9, 3))
    for geometry in (InputGeometry.pad(30, 120, 56), InputGeometry.tiled(23, 70, TileSettings(28))):
        patch_maps = random_patch_maps(geometry, 1, 5)
        expected = full_frame_maps(patch_maps, geometry, smoothing)
        assert_same_maps(to_image_maps(patch_maps, geometry, smoothing), expected)


def test_signed_maps_and_one_image_at_a_time_agree():
    geometry = InputGeometry.pad(37, 80, 56)
    patch_maps = random_patch_maps(geometry, 3, 7) - 0.5  # signed values
    together = to_image_maps(patch_maps, geometry)
    assert_same_maps(together, full_frame_maps(patch_maps, geometry))
    for index in range(3):
        alone = to_image_maps(patch_maps[index : index + 1], geometry)
        np.testing.assert_array_equal(alone[0], together[index])


@pytest.mark.usefixtures("feature_cache")
@pytest.mark.parametrize("n", [1, 999, 1000, 1001, 1961, 1_499_000, 561_741, 2_073_601])
def test_top_count_is_the_published_floor(n):
    assert top_count(n) == max(1, int(0.001 * n))


@pytest.mark.usefixtures("feature_cache")
def test_top_count_equals_the_published_floor_for_many_sizes():
    rng = np.random.default_rng(0)
    for n in rng.integers(1, 50_000_000, 20_000):
        assert top_count(int(n)) == max(1, int(0.001 * int(n)))


@pytest.mark.usefixtures("feature_cache")
@pytest.mark.parametrize("height,width", [(37, 53), (1000, 1499), (123, 457), (9, 9)])
def test_image_score_averages_the_floor_of_a_tenth_of_a_percent(height, width):
    rng = np.random.default_rng(height)
    anomaly_map = rng.random((height, width)).astype(np.float32)
    k = max(1, int(0.001 * height * width))  # the published code: int(), not ceil
    expected = np.sort(anomaly_map.ravel().astype(np.float64))[::-1][:k].mean()
    assert image_score(anomaly_map) == pytest.approx(expected, rel=1e-12)


def test_bf16_patch_anomaly_is_close_to_fp32():
    generator = torch.Generator().manual_seed(3)
    early = torch.randn(2, 5, 6, 64, generator=generator)
    late = 0.7 * early + 0.3 * torch.randn(2, 5, 6, 64, generator=generator)
    forward, backward = new_students(64, seed=0)
    with torch.inference_mode():
        fp32 = patch_anomaly(forward, backward, early, late)
        bf16 = patch_anomaly(forward, backward, early, late, "bf16")
    assert bf16.dtype == torch.float32 and bf16.shape == (2, 5, 6)
    assert not torch.equal(bf16, fp32)  # the students really ran in bf16
    assert torch.allclose(bf16, fp32, rtol=0.02)
