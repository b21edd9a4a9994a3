"""The map step as small per-axis matrices: upsampling, blending, box smoothing, crop, resize.

Bilinear upsampling of a patch grid P (h, w) to a frame is separable: U_r · P · U_cᵀ. The tiles
blend weighs window (r, c) by rows[r] ⊗ cols[c], the box means of the paper's smoothing act on
rows or on columns alone, the crop keeps rows and columns and the resize back to H × W is
bilinear again: every step is a linear map along one axis. So the map is Σ_rc A_r · P_rc · B_cᵀ,
with A_r the (H, h) matrix that upsamples window row r's grid onto its span of the frame,
weighs it, smooths it along the rows, keeps the image's rows and resizes them (B_c likewise).
The operators are built for the kept rows only: the box means run on the frame rows within
their reach (Σ side // 2 over the passes along the axis) of the span and of the kept rows,
zero-padded where the frame ends, as the full-frame computation pads them. Interpolation
weights are PyTorch's (float32 scale, the source position rounded once to float32, clamped
at the edges); operators and products are float64, so the maps differ from the float32
full-frame computation by its rounding alone. Cost: the operators, O((H + W) · grid · passes);
the product, per row of windows, (h · W · w) + (rows reached · h · W).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from l2bt.preprocess import InputGeometry
from l2bt.tiling import PATCH, TileLayout, blend_weights

AxisOperator = tuple[int, int, torch.Tensor]  # (span, first map row, (rows, grid) float64)


@dataclass(frozen=True, eq=False)
class MapAxis:
    """One axis (rows or columns) of the frame an image's map is made in.

    `frame`: the frame's length. `kept`: (start, stop) of the image in the frame (in tiles
    mode the scaled image). `length`: the map's length, the original side (not stop − start
    only when tiles rescaled the image: the kept span is then resized to it). `grid`: patches
    per input along the axis. `spans`: (start, blend weights) of each input's span in the
    frame, as long as its weights (pad, aspect: one span, the whole frame, weight one).
    """

    frame: int
    kept: tuple[int, int]
    length: int
    grid: int
    spans: tuple[tuple[int, np.ndarray], ...]

    def widened(self, reach: int) -> tuple[int, int]:
        """The kept span ± `reach`, clipped to the frame."""
        return max(0, self.kept[0] - reach), min(self.frame, self.kept[1] + reach)


def map_axes(geometry: InputGeometry) -> tuple[MapAxis, MapAxis]:
    """The rows and columns of the frame `geometry`'s map is made in."""
    if geometry.tiles is not None:
        return _layout_axes(geometry.tiles)
    (grid_rows, grid_cols), top, left = geometry.grid, geometry.top, geometry.left
    rows, cols = geometry.frame_height, geometry.frame_width
    whole_rows, whole_cols = ((0, np.ones(rows)),), ((0, np.ones(cols)),)
    return (
        MapAxis(rows, (top, top + geometry.height), geometry.height, grid_rows, whole_rows),
        MapAxis(cols, (left, left + geometry.width), geometry.width, grid_cols, whole_cols),
    )


def _layout_axes(layout: TileLayout) -> tuple[MapAxis, MapAxis]:
    """A tiles frame: one span per row (column) of windows, weighted by `blend_weights`."""
    row_weights, col_weights = blend_weights(layout)
    grid = layout.size // PATCH
    row_spans = tuple(zip(layout.row_starts, row_weights, strict=True))
    col_spans = tuple(zip(layout.col_starts, col_weights, strict=True))
    kept_rows = (layout.top, layout.top + layout.scaled_height)
    kept_cols = (layout.left, layout.left + layout.scaled_width)
    return (
        MapAxis(layout.frame_height, kept_rows, layout.height, grid, row_spans),
        MapAxis(layout.frame_width, kept_cols, layout.width, grid, col_spans),
    )


def axis_operators(
    axis: MapAxis,
    sides: Sequence[int],
    align_corners: bool,
    device: torch.device,
    region: tuple[int, int] | None = None,
) -> list[AxisOperator]:
    """Per span of `axis`: the linear map from its `grid` patch values to the map's rows,
    through upsampling onto the span, its blend weights and zero-padded box means of `sides`,
    then the kept rows, resized to `axis.length` when tiles rescaled them; or, given
    `region`, frame rows region[0]..region[1] as they are. Only the rows a span reaches are
    kept, with the first one's index; spans that reach none are left out. Built with numpy
    (one thread: torch's thread pool costs more than matrices this small)."""
    operators = []
    for index, (start, weights) in enumerate(axis.spans):
        operator = _span_operator(axis, start, weights, region or axis.kept, sides, align_corners)
        if region is None and len(operator) != axis.length:
            operator = resize_rows(operator, axis.length)
        reached = np.flatnonzero(np.abs(operator).sum(axis=1))
        if len(reached):
            first, last = int(reached[0]), int(reached[-1]) + 1
            operators.append((index, first, torch.from_numpy(operator[first:last]).to(device)))
    return operators


def _span_operator(
    axis: MapAxis,
    start: int,
    weights: np.ndarray,
    kept: tuple[int, int],
    sides: Sequence[int],
    align_corners: bool,
) -> np.ndarray:
    """(kept rows, grid) float64: one span's patch values to the kept rows. The box means run
    on the frame rows within their reach of both the span and the kept rows: a frame row
    beyond the first is zero before every pass and one beyond the second is never an input
    of a kept row, so the zero padding is exact where the frame ends and harmless elsewhere."""
    reach, stop = sum(side // 2 for side in sides), start + len(weights)
    low = max(0, start - reach, kept[0] - reach)
    high = min(axis.frame, stop + reach, kept[1] + reach)
    operator = np.zeros((kept[1] - kept[0], axis.grid))
    first, last = max(start, low), min(stop, high)  # the span's rows among them
    if first >= last:
        return operator
    rows = np.zeros((high - low, axis.grid))
    upsampled = upsampling_matrix(
        axis.grid, len(weights), first - start, last - start, align_corners
    )
    rows[first - low : last - low] = upsampled * weights[first - start : last - start, None]
    for side in sides:
        rows = box_means(rows, side)
    shared = range(max(low, kept[0]), min(high, kept[1]))  # kept rows computed: not empty
    operator[shared.start - kept[0] : shared.stop - kept[0]] = rows[
        shared.start - low : shared.stop - low
    ]
    return operator


def box_means(rows: np.ndarray, side: int) -> np.ndarray:
    """(n, k) -> (n, k): zero-padded means of `side` consecutive rows, as
    `anomaly_map.box_pass` takes them along the rows."""
    padded = np.zeros((len(rows) + side - 1, rows.shape[1]))  # (n, k) -> (n + side − 1, k)
    padded[side // 2 : side // 2 + len(rows)] = rows
    total = padded[: len(rows)].copy()
    for offset in range(1, side):
        total += padded[offset : offset + len(rows)]
    return total / side


def linear_taps(
    in_size: int, out_size: int, start: int, stop: int, align_corners: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Outputs start..stop of a linear resize of `in_size` values to `out_size` as PyTorch's
    bilinear computes them: (lower index, upper index, their float32 weights). The source
    position, scale · (i + ½) − ½ (i · scale with aligned corners) for the float32 scale, is
    rounded once to float32 and clamped at 0; the upper index stops at the last value."""
    positions = np.arange(start, stop, dtype=np.float64)
    if align_corners:
        scale = np.float32(in_size - 1) / np.float32(max(out_size - 1, 1)) if out_size > 1 else 0
        source = (positions * float(scale)).astype(np.float32)
    else:
        scale = np.float32(in_size) / np.float32(out_size)
        source = np.maximum(((positions + 0.5) * float(scale) - 0.5).astype(np.float32), 0)
    lower = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    upper = np.minimum(lower + 1, in_size - 1)
    upper_weight = np.clip(source - lower.astype(np.float32), 0, 1)
    return lower, upper, 1 - upper_weight, upper_weight


def upsampling_matrix(
    in_size: int, out_size: int, start: int, stop: int, align_corners: bool
) -> np.ndarray:
    """(stop − start, in_size) float64: rows start..stop of the linear resize as a matrix."""
    lower, upper, lower_weight, upper_weight = linear_taps(
        in_size, out_size, start, stop, align_corners
    )
    matrix = np.zeros((stop - start, in_size))
    rows = np.arange(stop - start)
    np.add.at(matrix, (rows, lower), lower_weight)
    np.add.at(matrix, (rows, upper), upper_weight)
    return matrix


def resize_rows(values: np.ndarray, length: int) -> np.ndarray:
    """(n, k) float64 -> (length, k): the linear resize along the first axis
    (align_corners=False, as `tiling.frame_to_image`)."""
    lower, upper, lower_weight, upper_weight = linear_taps(len(values), length, 0, length, False)
    return values[lower] * lower_weight[:, None] + values[upper] * upper_weight[:, None]


def operator_map(
    patches: torch.Tensor,
    row_ops: Sequence[AxisOperator],
    col_ops: Sequence[AxisOperator],
    shape: tuple[int, int],
) -> torch.Tensor:
    """(n_rows, n_cols, h, w) float64 patch maps -> (shape) float64 Σ_rc A_r · P_rc · B_cᵀ:
    per row of windows, its maps taken along the columns into one (h, W) strip, then along
    the rows into the map."""
    maps = torch.zeros(shape, dtype=torch.float64, device=patches.device)
    for row, top, row_op in row_ops:
        strip = torch.zeros(patches.shape[2], shape[1], dtype=torch.float64, device=patches.device)
        for col, left, col_op in col_ops:
            strip[:, left : left + len(col_op)] += patches[row, col] @ col_op.T  # (h, w)·(w, n)
        maps[top : top + len(row_op)].addmm_(row_op, strip)  # (n, h)·(h, W)
    return maps
