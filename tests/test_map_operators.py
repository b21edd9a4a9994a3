"""map_operators.py: linear taps are PyTorch's bilinear weights, the upsampling matrices
give the full frame cropped, box means are box passes (all to within 1e-6 of the peak)."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from l2bt.anomaly_map import (
    box_pass,
)
from l2bt.map_operators import box_means, linear_taps, upsampling_matrix

PEAK_TOLERANCE = 1e-6  # of the map's peak


PEAK_TOLERANCE = 1e-6  # of the map's peak


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
