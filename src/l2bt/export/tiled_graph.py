"""A tiles-mode run's whole prediction of one H × W image as one `nn.Module` for ONNX.

`TiledL2BTGraph` is `L2BTGraph` for a tiles-mode run (SPEC §11) and one image size: its
`TileLayout` is fixed at export time, so the rescale by s (PIL's bicubic, emulated as in
`L2BTGraph`), the edge pad to the frame and the N window cuts are static slices. The N
windows go through the teacher and the students as one batch; each window's patch map
is upsampled to T × T and weighted by its precomputed blend weight (rows ⊗ columns, the
weights of `l2bt.tiling.blend_weights`, which sum to one on every frame pixel), and the
weighted windows are summed into the frame segment by segment (`place`: slices, sums and
concatenations only). Then, as the torch engine: the paper's smoothing over the frame,
the crop, the bilinear resize back to H × W when s ≠ 1 (`tiling.frame_to_image`),
the top-k score and the decisions. It differs from the torch engine (a running weighted
mean) by float rounding, and by PIL's fixed-point weights when s ≠ 1. Memory: the
teacher's activations of all N windows at once (attention: N · heads · tokens² floats).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from l2bt.anomaly_map import patch_anomaly, smooth
from l2bt.export.graph import L2BTGraph, pil_bicubic, top_k_mean
from l2bt.model import L2BT
from l2bt.tiling import TileLayout, blend_weights, frame_to_image


def place(
    pieces: Sequence[torch.Tensor], starts: Sequence[int], length: int, dim: int
) -> torch.Tensor:
    """The sum of `pieces` (all the same size along `dim`), piece i shifted to `starts[i]`,
    in a tensor `length` long along `dim`, every position of which some piece covers.

    Built from static slices: the axis is cut where any piece starts or ends, and each
    segment is the sum of the pieces covering it, so no scatter is needed.
    """
    size = pieces[0].shape[dim]
    edges = sorted({0, length, *starts, *(start + size for start in starts)})
    segments = []
    for begin, end in itertools.pairwise(edges):
        covering = [
            piece.narrow(dim, begin - start, end - begin)
            for piece, start in zip(pieces, starts, strict=True)
            if start <= begin and end <= start + size
        ]
        if not covering:
            raise ValueError(f"positions {begin}..{end - 1} are covered by no piece")
        segments.append(torch.stack(covering).sum(0))
    return torch.cat(segments, dim)


class TiledL2BTGraph(L2BTGraph):
    """One (H, W, 3) uint8 image of the exported size in; outputs as `L2BTGraph`."""

    row_weights: torch.Tensor
    col_weights: torch.Tensor

    def __init__(self, model: L2BT, image_hw: tuple[int, int]) -> None:
        settings = model.config.teacher.tiles
        self.layout = TileLayout.for_image(*image_hw, settings)
        super().__init__(model, (settings.size, settings.size))
        rows, cols = blend_weights(self.layout)
        self.register_buffer("row_weights", torch.from_numpy(rows.astype(np.float32)))
        self.register_buffer("col_weights", torch.from_numpy(cols.astype(np.float32)))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        early, late = self.teacher(self.windows(image))  # (N, T/14, T/14, D) each
        patches = patch_anomaly(self.forward_student, self.backward_student, early, late)
        size = (self.layout.size, self.layout.size)
        window_maps = F.interpolate(
            patches.unsqueeze(1), size=size, mode="bilinear", align_corners=False
        )[:, 0]  # (N, T/14, T/14) -> (N, 1, T, T) -> (N, T, T)
        frame = smooth(self.blend(window_maps)[None, None])  # (fh, fw) -> (1, 1, fh, fw)
        anomaly_map = frame_to_image(frame, self.layout)
        return self.decide(anomaly_map, top_k_mean(anomaly_map))

    def windows(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (H, W, 3) -> the normalised (N, 3, T, T) windows, as `tiling.cut_windows`."""
        layout = self.layout
        pixels = image.permute(2, 0, 1).unsqueeze(0).float()  # (H, W, 3) -> (1, 3, H, W)
        if layout.rescaled:
            pixels = pil_bicubic(pixels, layout.scaled_height, layout.scaled_width)
        bottom = layout.frame_height - layout.scaled_height - layout.top
        right = layout.frame_width - layout.scaled_width - layout.left
        frame = F.pad(pixels, (layout.left, right, layout.top, bottom), mode="replicate")
        size = layout.size
        windows = torch.cat(
            [frame[:, :, top : top + size, left : left + size] for top, left in layout.windows]
        )  # N × (1, 3, T, T) -> (N, 3, T, T)
        return (windows - self.mean) / self.std

    def blend(self, window_maps: torch.Tensor) -> torch.Tensor:
        """(N, T, T) window maps, row-major -> the (frame_h, frame_w) blended frame map."""
        layout = self.layout
        n_rows, n_cols = len(layout.row_starts), len(layout.col_starts)
        grid = window_maps.reshape(n_rows, n_cols, layout.size, layout.size)  # (N, T, T) ->
        grid = grid * self.col_weights[None, :, None, :]  # (n_rows, n_cols, T, T)
        strips = [
            place(list(grid[row].unbind(0)), layout.col_starts, layout.frame_width, dim=1)
            * self.row_weights[row, :, None]
            for row in range(n_rows)
        ]  # n_rows × (T, frame_w)
        return place(strips, layout.row_starts, layout.frame_height, dim=0)
