"""The map made for the kept pixels only (`l2bt.map_operators`) against today's full-frame
computation, kept here as a plain reference: upsample the patch grid to the whole frame
(each window to T × T and `tiling.stitch`ed, in tiles mode), smooth it all, crop (and resize).

Maps agree to within 1e-6 of the map's peak (max |new − old| ≤ 1e-6 · max |old|); image
scores to a relative 1e-6. Inputs are random and seeded; no wall-time assertion."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from l2bt.anomaly_map import (
    BLUR_PASSES,
    SMOOTHING,
    BoxPass,
    box_pass,
    image_score,
    smooth,
    smoothing_reach,
    to_image_maps,
)
from l2bt.config import TileSettings
from l2bt.map_operators import box_means, linear_taps, upsampling_matrix
from l2bt.methods.dinomaly import GaussianBlur, gaussian_kernel, to_full_resolution
from l2bt.preprocess import InputGeometry
from l2bt.tiling import frame_to_image, stitch

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


@pytest.mark.parametrize("align_corners", [False, True])
def test_linear_taps_are_pytorchs_bilinear_weights(align_corners):
    rng = np.random.default_rng(0)
    sizes = [(1, 7), (2, 1), (16, 1540), (16, 9), (37, 518), (74, 645), (5, 3), (3, 5)]
    sizes += [tuple(int(v) for v in rng.integers(1, 300, 2)) for _ in range(30)]
    for in_size, out_size in sizes:
        identity = torch.eye(in_size)[None, None]  # the weights, read back from the resize
        expected = F.interpolate(
            identity, size=(out_size, in_size), mode="bilinear", align_corners=align_corners
        )[0, 0].numpy()
        got = upsampling_matrix(in_size, out_size, 0, out_size, align_corners)
        np.testing.assert_allclose(got, expected, rtol=0, atol=2**-23)  # one float32 ulp at 1
        lower, upper, _, _ = linear_taps(in_size, out_size, 0, out_size, align_corners)
        assert (lower >= 0).all() and (lower <= upper).all() and (upper < in_size).all()


def test_upsampled_rows_and_columns_equal_the_full_frame_cropped():
    rng = np.random.default_rng(1)
    for align_corners in (False, True):
        for _ in range(20):
            h, w = (int(v) for v in rng.integers(1, 40, 2))
            height, width = (int(v) for v in rng.integers(1, 400, 2))  # scale < 1 and > 1
            top, left = int(rng.integers(0, height)), int(rng.integers(0, width))
            bottom, right = (
                int(rng.integers(top + 1, height + 1)),
                int(rng.integers(left + 1, width + 1)),
            )
            grid = torch.from_numpy(rng.random((h, w)).astype(np.float32))
            full = F.interpolate(
                grid[None, None], size=(height, width), mode="bilinear", align_corners=align_corners
            )[0, 0, top:bottom, left:right].numpy()
            rows = upsampling_matrix(h, height, top, bottom, align_corners)  # (n, h)
            cols = upsampling_matrix(w, width, left, right, align_corners)  # (m, w)
            got = rows @ grid.double().numpy() @ cols.T
            assert np.abs(got - full).max() <= PEAK_TOLERANCE * np.abs(full).max()


@pytest.mark.parametrize("side", [3, 5, 7])
def test_box_means_are_box_pass_along_the_rows(side):
    values = np.random.default_rng(side).random((23, 6))
    expected = box_pass(torch.from_numpy(values)[None, None], side, dim=2)[0, 0].numpy()
    np.testing.assert_allclose(box_means(values, side), expected, rtol=1e-12, atol=1e-15)


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
