"""Tiles input mode (SPEC §11): cover a large image with overlapping T × T windows.

The image, rescaled by s, is placed in a frame whose sides are max(scaled side, T): a side
shorter than T is edge-padded (centred, as pad mode centres) in that side only, a longer
side is never padded. Along each axis the fewest windows whose consecutive overlap is at
least the requested one are spread evenly from 0 to side − T (integer starts, floored), so
no window reaches past the frame and every pixel is covered.

Window maps are blended with separable linear ramps over each overlap, normalised per axis
in float64 so that the weights covering any frame pixel sum to one. `stitch` forms that
weighted mean incrementally (total += w; mean += w / total · (map − mean)) with one frame
of running totals and one window at a time; the first window to cover a pixel sets it
exactly, so windows that agree on a pixel give exactly that value (a constant stitches to
the same constant, bit for bit). The frame map is then smoothed once as a whole, cropped
to the scaled image and resized bilinearly back to exactly H × W when s changed the size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from l2bt.config import TileSettings
from l2bt.teacher.variants import PATCH_SIZE as PATCH


def window_starts(length: int, size: int, overlap: int) -> tuple[int, ...]:
    """Starts of the fewest `size`-wide windows covering [0, length) with neighbours
    overlapping by at least `overlap`, spread evenly from 0 to length − size.

    A length up to `size` gets one window at 0 (that side is padded to `size`).
    """
    if length <= 0 or not 0 <= overlap < size:
        raise ValueError(
            f"need length > 0 and 0 <= overlap < size, got {length}, {size}, {overlap}"
        )
    span = length - size
    if span <= 0:
        return (0,)
    steps = -(-span // (size - overlap))  # ceil: every step at most size − overlap
    return tuple(index * span // steps for index in range(steps + 1))


def round_half_up(value: float) -> int:
    """Nearest integer of a non-negative value, halves up (as the aspect mode rounds)."""
    return int(value + 0.5)


@dataclass(frozen=True)
class TileLayout:
    """Where one H × W image's windows lie. Equal sizes and settings give equal layouts.

    `scaled_height` × `scaled_width`: the image after rescaling by `scale` (round half up,
    at least 1). `frame_height` × `frame_width`: the padded frame, each side
    max(scaled side, `size`). `top`, `left`: where the scaled image sits in the frame
    (centred; 0 in a side longer than `size`). `row_starts`, `col_starts`: window starts
    in frame coordinates; the windows are their product, row-major.
    """

    height: int
    width: int
    size: int
    scale: float
    scaled_height: int
    scaled_width: int
    frame_height: int
    frame_width: int
    top: int
    left: int
    row_starts: tuple[int, ...]
    col_starts: tuple[int, ...]

    @classmethod
    def for_image(cls, height: int, width: int, settings: TileSettings) -> TileLayout:
        size, overlap = settings.size, settings.min_overlap
        scaled_h = max(1, round_half_up(height * settings.scale))
        scaled_w = max(1, round_half_up(width * settings.scale))
        frame_h, frame_w = max(scaled_h, size), max(scaled_w, size)
        return cls(
            height,
            width,
            size,
            settings.scale,
            scaled_h,
            scaled_w,
            frame_h,
            frame_w,
            top=(frame_h - scaled_h) // 2,
            left=(frame_w - scaled_w) // 2,
            row_starts=window_starts(frame_h, size, overlap),
            col_starts=window_starts(frame_w, size, overlap),
        )

    @property
    def windows(self) -> tuple[tuple[int, int], ...]:
        """(top, left) of every window in frame coordinates, row-major."""
        return tuple((top, left) for top in self.row_starts for left in self.col_starts)

    @property
    def count(self) -> int:
        return len(self.row_starts) * len(self.col_starts)

    @property
    def grid(self) -> tuple[int, int]:
        """The teacher's patch grid of one window (rows, columns)."""
        return self.size // PATCH, self.size // PATCH

    @property
    def rescaled(self) -> bool:
        """Whether the scaled image differs in size from the original."""
        return (self.scaled_height, self.scaled_width) != (self.height, self.width)


def ramp_weights(starts: tuple[int, ...], size: int) -> np.ndarray:
    """(n, size) float64 un-normalised weights: over each overlap of two neighbours the
    right one rises as (x + ½) / overlap and the left one falls as its mirror (the two sum
    to one there); 1 elsewhere, > 0 everywhere."""
    positions = np.arange(size, dtype=np.float64) + 0.5
    weights = np.ones((len(starts), size))
    for index in range(1, len(starts)):
        overlap = starts[index - 1] + size - starts[index]
        if overlap > 0:
            weights[index] *= np.minimum(1.0, positions / overlap)
            weights[index - 1] *= np.minimum(1.0, positions[::-1] / overlap)
    return weights


def axis_weights(starts: tuple[int, ...], size: int, length: int) -> np.ndarray:
    """(n, size) float64 weights of the windows along one axis of `length` px, normalised
    so that on every position the windows covering it sum to one."""
    weights = ramp_weights(starts, size)
    total = np.zeros(length)
    for start, weight in zip(starts, weights, strict=True):
        total[start : start + size] += weight
    for index, start in enumerate(starts):
        weights[index] /= total[start : start + size]
    return weights


@lru_cache(maxsize=64)
def blend_weights(layout: TileLayout) -> tuple[np.ndarray, np.ndarray]:
    """(row weights (n_rows, T), column weights (n_cols, T)), float64 and read-only.

    Window (i, j) weighs rows[i] ⊗ cols[j]; on every frame pixel the weights of the
    windows covering it sum to one (the product of two per-axis sums of one).
    """
    rows = axis_weights(layout.row_starts, layout.size, layout.frame_height)
    cols = axis_weights(layout.col_starts, layout.size, layout.frame_width)
    rows.setflags(write=False)
    cols.setflags(write=False)
    return rows, cols


def stitch(window_maps: torch.Tensor, layout: TileLayout) -> torch.Tensor:
    """(N, T, T) window maps (row-major, as `layout.windows`) -> (frame_h, frame_w) float32
    weighted mean. Windows agreeing on a pixel give exactly their value there."""
    size = layout.size
    if tuple(window_maps.shape) != (layout.count, size, size):
        raise ValueError(
            f"expected ({layout.count}, {size}, {size}) window maps, got {tuple(window_maps.shape)}"
        )
    return stitch_windows(lambda index: window_maps[index], layout, window_maps.device)


def stitch_windows(
    window_map: Callable[[int], torch.Tensor], layout: TileLayout, device: torch.device
) -> torch.Tensor:
    """`stitch` with window i's (T, T) map made by `window_map(i)` when it is blended, so
    only one window map exists at a time: memory is the frame's two buffers."""
    size = layout.size
    rows, cols = blend_weights(layout)
    row_weights = torch.from_numpy(rows.astype(np.float32)).to(device)  # (n_rows, T)
    col_weights = torch.from_numpy(cols.astype(np.float32)).to(device)  # (n_cols, T)
    frame = (layout.frame_height, layout.frame_width)
    total = torch.zeros(frame, dtype=torch.float32, device=device)
    mean = torch.zeros(frame, dtype=torch.float32, device=device)
    for index, (top, left) in enumerate(layout.windows):
        row, col = divmod(index, len(layout.col_starts))
        weight = row_weights[row, :, None] * col_weights[col, None, :]  # (T, 1)·(1, T) -> (T, T)
        region = (slice(top, top + size), slice(left, left + size))
        total[region] += weight
        mean[region] += weight / total[region] * (window_map(index).float() - mean[region])
    return mean


def scaled_image(image: np.ndarray, layout: TileLayout) -> np.ndarray:
    """(H, W, 3) uint8 -> (scaled_h, scaled_w, 3), PIL bicubic when the size changes."""
    if not layout.rescaled:
        return image
    resized = Image.fromarray(image).resize(
        (layout.scaled_width, layout.scaled_height), Image.Resampling.BICUBIC
    )
    return np.asarray(resized)


def cut_windows(image: np.ndarray, layout: TileLayout) -> np.ndarray:
    """(H, W, 3) uint8 -> (N, T, T, 3) windows of the rescaled, edge-padded frame."""
    if image.shape[:2] != (layout.height, layout.width):
        raise ValueError(
            f"image is {image.shape[:2]}, layout is for {(layout.height, layout.width)}"
        )
    scaled = scaled_image(image, layout)
    bottom = layout.frame_height - layout.scaled_height - layout.top
    right = layout.frame_width - layout.scaled_width - layout.left
    frame = np.pad(scaled, ((layout.top, bottom), (layout.left, right), (0, 0)), mode="edge")
    size = layout.size
    return np.stack([frame[top : top + size, left : left + size] for top, left in layout.windows])


def frame_to_image(frame_map: torch.Tensor, layout: TileLayout) -> torch.Tensor:
    """(1, 1, frame_h, frame_w) stitched and smoothed map -> (H, W) float32 on its device:
    the padding cropped away and, when the image was rescaled, the map resized bilinearly
    back to H × W."""
    rows = slice(layout.top, layout.top + layout.scaled_height)
    cols = slice(layout.left, layout.left + layout.scaled_width)
    maps = frame_map.float()[:, :, rows, cols]  # (1, 1, frame_h, frame_w) -> (1, 1, sh, sw)
    if layout.rescaled:
        maps = F.interpolate(
            maps, size=(layout.height, layout.width), mode="bilinear", align_corners=False
        )
    return maps[0, 0]  # (1, 1, H, W) -> (H, W)
