"""The low-resolution protocol's resizing: maps bilinear, masks nearest-neighbour, to N × N.

Low-resolution benchmarks score maps and masks resized to a small square (256 × 256
typically). To set that protocol beside the original-resolution one, the same maps are
resized here and evaluated as usual (regions relabelled and size bins recomputed on the
resized masks). Both routines are plain, torch-free numpy with half-pixel-centre
sampling, so a hand computation reproduces them:

- `resize_bilinear`: output pixel i of an axis of n_in → n_out reads the source
  coordinate x = (i + ½) · n_in / n_out − ½, clamped below at 0; x₀ = ⌊x⌋ (at most
  n_in − 1), x₁ = min(x₀ + 1, n_in − 1), w = x − x₀, value (1 − w) · a[x₀] + w · a[x₁];
  rows first, then columns, in float64. These are the sampling positions of
  `torch.nn.functional.interpolate(mode="bilinear", align_corners=False,
  antialias=False)` and OpenCV's INTER_LINEAR (no antialiasing when shrinking).
- `resize_nearest`: output pixel i reads source ⌊(i + ½) · n_in / n_out⌋, in integer
  arithmetic (PIL's NEAREST, torch's "nearest-exact").

Time O(N² + N · W) per map; memory: 2N source rows, then N × N. Only the rows that are
read are touched, so a memory-mapped map is read in part.
"""

from __future__ import annotations

import numpy as np


def resize_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W) real -> (size, size) float64, bilinear (see the module docstring)."""
    rows0, rows1, row_weight = _linear_taps(image.shape[0], size)
    top = np.asarray(image[rows0], dtype=np.float64)  # (size, W): only these rows read
    bottom = np.asarray(image[rows1], dtype=np.float64)
    rows = (1.0 - row_weight)[:, None] * top + row_weight[:, None] * bottom  # (size, W)
    cols0, cols1, col_weight = _linear_taps(image.shape[1], size)
    return (1.0 - col_weight)[None, :] * rows[:, cols0] + col_weight[None, :] * rows[:, cols1]


def resize_nearest(mask: np.ndarray, size: int) -> np.ndarray:
    """(H, W) -> (size, size), nearest-neighbour (see the module docstring)."""
    rows = nearest_taps(mask.shape[0], size)
    cols = nearest_taps(mask.shape[1], size)
    return np.asarray(mask[rows])[:, cols]  # (size, W) then (size, size)


def nearest_taps(n_in: int, n_out: int) -> np.ndarray:
    """(n_out,) source index of each output index: ⌊(i + ½) · n_in / n_out⌋."""
    return np.minimum((2 * np.arange(n_out) + 1) * n_in // (2 * n_out), n_in - 1)


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n_out,) first and second source index and the second's weight."""
    source = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    first = np.minimum(np.floor(source).astype(np.int64), n_in - 1)
    second = np.minimum(first + 1, n_in - 1)
    return first, second, source - first
