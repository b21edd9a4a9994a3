"""The one predict road: images -> teacher inputs -> patch anomaly -> full-resolution maps.

`predict_images` is the road for every method that scores the teacher's patches (L2BT's
students, PatchCore's memory bank, Dinomaly's decoder): preprocess each image (its
`InputGeometry`: one input, or its windows in tiles mode), run the scorer on batches of
at most `INPUT_BATCH` inputs that share a shape, turn the patch maps of images that share
a geometry into full-resolution maps, score each image (preprocessing and scores on all
the host's cores). The methods differ only in how they score patches and smooth maps.

L2BT's scorer: per patch, ‖n(f(t_a)) − n(t_b)‖ · ‖n(b(t_b)) − n(t_a)‖ with n the L2
normalisation, f and b the forward and backward students, t_a and t_b the teacher's
features of the two layers. The map: the patch grid upsampled bilinearly to the geometry's
frame (the padded square in `pad` mode, the image in `aspect` mode; in tiles mode each window
to T × T, stitched), smoothed with five 5×5 then three 7×7 zero-padded box blurs (the paper's
smoothing), cropped back to the image's pixels (and resized to H × W when tiles rescaled it),
all computed for the kept pixels only (`l2bt.map_operators`). The image score is the mean of
the top k = ⌊0.001 · H · W⌋ map pixels (at least one), as the published code computes it.
Memory: the inputs of one call, one batch of activations, one map per image (+ its float64
copy while it is made).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from l2bt.config import TeacherConfig
from l2bt.map_operators import MapAxis, axis_operators, map_axes, operator_map
from l2bt.prediction import Prediction
from l2bt.preprocess import InputGeometry, group_indices, normalise, teacher_pixels
from l2bt.utils.device import to_host
from l2bt.utils.host import host_map

BLUR_PASSES = ((5, 5), (7, 3))  # (box side, repetitions)
TOP_FRACTION = 0.001  # of the map's pixels, averaged into the image score
INPUT_BATCH = 16  # teacher inputs (images or windows) per scorer call

PatchScorer = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, h, w) -> (B, h/14, w/14)
MapMaker = Callable[[torch.Tensor, InputGeometry], np.ndarray]  # (B·n, h, w) -> (B, H, W)


def patch_anomaly(
    forward_student: nn.Module,
    backward_student: nn.Module,
    early: torch.Tensor,
    late: torch.Tensor,
    precision: str = "fp32",
) -> torch.Tensor:
    """(B, h, w, D) features of both layers -> (B, h, w) per-patch anomaly.

    `precision` is the students' ("fp32" or "bf16"): with "bf16" the students run under
    autocast (their D×D weights cast per call: 3·D² values, nothing next to the N·D²
    products); normalisation and distances are float32 either way, as is the result.
    """
    with torch.autocast(early.device.type, torch.bfloat16, enabled=precision == "bf16"):
        predicted_late, predicted_early = forward_student(early), backward_student(late)
    forward_error = F.normalize(predicted_late.float(), dim=-1) - F.normalize(late, dim=-1)
    backward_error = F.normalize(predicted_early.float(), dim=-1) - F.normalize(early, dim=-1)
    return (forward_error.norm(dim=-1) * backward_error.norm(dim=-1)).float()


def box_pass(maps: torch.Tensor, side: int, dim: int) -> torch.Tensor:
    """Zero-padded mean of `side` values along `dim` (2: rows, 3: columns) of (B, 1, H, W);
    a side × side box blur is a pass along each."""
    kernel, padding = ((side, 1), (side // 2, 0)) if dim == 2 else ((1, side), (0, side // 2))
    return F.avg_pool2d(maps, kernel, stride=1, padding=padding, count_include_pad=True)


class SmoothingPass(Protocol):
    """One pass over (B, 1, H, W) maps; an output pixel's inputs lie at most `reach`
    (rows, columns) away from it on each side."""

    @property
    def reach(self) -> tuple[int, int]: ...

    def __call__(self, maps: torch.Tensor) -> torch.Tensor: ...


Smoothing = Sequence[SmoothingPass]  # applied one after another


@dataclass(frozen=True)
class BoxPass:
    """`box_pass` of a fixed side along a fixed axis (2: rows, 3: columns)."""

    side: int
    dim: int

    @property
    def reach(self) -> tuple[int, int]:
        half = self.side // 2
        return (half, 0) if self.dim == 2 else (0, half)

    def __call__(self, maps: torch.Tensor) -> torch.Tensor:
        return box_pass(maps, self.side, self.dim)


# The paper's smoothing: five 5 × 5 then three 7 × 7 box blurs, each a row and a column pass.
SMOOTHING: Smoothing = tuple(
    BoxPass(side, dim)
    for side, repetitions in BLUR_PASSES
    for _ in range(repetitions)
    for dim in (2, 3)
)


def smooth(maps: torch.Tensor, passes: Smoothing = SMOOTHING) -> torch.Tensor:
    """(B, 1, H, W) maps through `passes` (default the paper's smoothing). Each pass's input
    is freed as the next pass starts, unless the caller still holds it."""
    for one_pass in passes:
        maps = one_pass(maps)
    return maps


def smoothing_reach(passes: Smoothing) -> tuple[int, int]:
    """(rows, columns): how far from an output pixel the inputs of `passes` lie, each side."""
    return sum(p.reach[0] for p in passes), sum(p.reach[1] for p in passes)


def to_image_maps(
    patch_maps: torch.Tensor,
    geometry: InputGeometry,
    smoothing: Smoothing = SMOOTHING,
    align_corners: bool = False,
) -> np.ndarray:
    """(B · n, h, w) patch maps of B images sharing one geometry (n = its inputs per
    image, image after image) -> (B, H, W) float32 maps: bilinear upsampling to the
    geometry's frame (to T × T and stitched, in tiles mode), `smoothing`, the crop (and
    the resize back to H × W when tiles rescaled the image), for the kept pixels only
    (`l2bt.map_operators`). Each image's map is made alone and copied into the output."""
    rows, cols = map_axes(geometry)
    boxes = [p for p in smoothing if isinstance(p, BoxPass)]
    if len(boxes) == len(smoothing):
        one_map = _separable_maps(rows, cols, boxes, align_corners, patch_maps.device)
    else:
        one_map = _region_maps(rows, cols, smoothing, align_corners, patch_maps.device)
    # (B · n, h, w) -> (B, n_rows, n_cols, h, w): the windows are row-major
    images = patch_maps.double().reshape(
        -1, len(rows.spans), len(cols.spans), *patch_maps.shape[1:]
    )
    maps = np.empty((images.shape[0], rows.length, cols.length), np.float32)
    for index, patches in enumerate(images):
        to_host(one_map(patches).float(), out=maps[index])
    return maps


OneMap = Callable[[torch.Tensor], torch.Tensor]  # (n_rows, n_cols, h, w) float64 -> (H, W)


def _separable_maps(
    rows: MapAxis,
    cols: MapAxis,
    boxes: Sequence[BoxPass],
    align_corners: bool,
    device: torch.device,
) -> OneMap:
    """Box smoothing folded into each axis's operators: the map is Σ A_r · P_rc · B_cᵀ."""
    row_sides = [box.side for box in boxes if box.dim == 2]
    col_sides = [box.side for box in boxes if box.dim == 3]
    row_ops = axis_operators(rows, row_sides, align_corners, device)
    col_ops = axis_operators(cols, col_sides, align_corners, device)
    if rows.grid <= cols.grid:  # H · W · h multiply-adds
        return partial(
            operator_map, row_ops=row_ops, col_ops=col_ops, shape=(rows.length, cols.length)
        )
    shape = (cols.length, rows.length)  # H · W · w: the transposed map, columns first
    # (n_rows, n_cols, h, w) -> (n_cols, n_rows, w, h), and the (W, H) map back to (H, W)
    return lambda patches: operator_map(patches.permute(1, 0, 3, 2), col_ops, row_ops, shape).T


def _region_maps(
    rows: MapAxis, cols: MapAxis, smoothing: Smoothing, align_corners: bool, device: torch.device
) -> OneMap:
    """Any other smoothing: the upsampled (and stitched) map made on the kept pixels ± the
    smoothing's reach, clipped to the frame, smoothed there, cropped and resized."""
    reach_rows, reach_cols = smoothing_reach(smoothing)
    row_region, col_region = rows.widened(reach_rows), cols.widened(reach_cols)
    row_ops = axis_operators(rows, (), align_corners, device, row_region)
    col_ops = axis_operators(cols, (), align_corners, device, col_region)
    shape = (row_region[1] - row_region[0], col_region[1] - col_region[0])
    kept_rows = slice(rows.kept[0] - row_region[0], rows.kept[1] - row_region[0])
    kept_cols = slice(cols.kept[0] - col_region[0], cols.kept[1] - col_region[0])

    def one_map(patches: torch.Tensor) -> torch.Tensor:
        region = operator_map(patches, row_ops, col_ops, shape).float()[None, None]  # (1, 1, n, m)
        kept = smooth(region, smoothing)[:, :, kept_rows, kept_cols]
        if kept.shape[-2:] != (rows.length, cols.length):
            kept = F.interpolate(
                kept, (rows.length, cols.length), mode="bilinear", align_corners=False
            )
        return kept[0, 0]  # (1, 1, H, W) -> (H, W)

    return one_map


def top_count(n_pixels: int) -> int:
    """k = ⌊0.001 · n⌋, at least 1: how many pixels the image score averages.

    Integer arithmetic; equal to the published `int(0.001 * n)` for every n (the double
    0.001 is slightly above 1/1000 and n/1000 is never within rounding of an integer
    from below)."""
    return max(1, n_pixels // 1000)


def top_mean(anomaly_map: np.ndarray, k: int) -> float:
    """Mean of the k largest map values, in float64."""
    values = anomaly_map.ravel()
    top = np.partition(values, values.size - k)[values.size - k :]
    return float(top.astype(np.float64).mean())


def image_score(anomaly_map: np.ndarray) -> float:
    """Mean of the top k = ⌊0.001 · H · W⌋ map pixels (at least one pixel)."""
    return top_mean(anomaly_map, top_count(anomaly_map.size))


@torch.inference_mode()
def predict_images(
    score_patches: PatchScorer,
    images: Sequence[np.ndarray],
    teacher: TeacherConfig,
    device: torch.device,
    to_maps: MapMaker = to_image_maps,
    score: Callable[[np.ndarray], float] = image_score,
) -> list[Prediction]:
    """(H, W, 3) uint8 images -> a Prediction each, its map exactly the image's H × W."""
    geometries = [InputGeometry.of(teacher, *image.shape[:2]) for image in images]
    pixels = host_map(teacher_pixels, images, geometries)  # resizes on every host core
    patch_maps = _score_inputs(score_patches, pixels, geometries, device)
    del pixels  # the inputs (in tiles mode ~1.6 × the image) are not needed for the maps
    maps: dict[int, np.ndarray] = {}
    for geometry, indices in group_indices(geometries).items():
        batch = torch.cat([patch_maps[i] for i in indices])  # (B · n, h/14, w/14)
        for i, anomaly_map in zip(indices, to_maps(batch, geometry), strict=True):
            maps[i] = anomaly_map
    ordered = [maps[i] for i in range(len(images))]
    return [Prediction(m, s) for m, s in zip(ordered, host_map(score, ordered), strict=True)]


def _score_inputs(
    score_patches: PatchScorer,
    pixels: Sequence[np.ndarray],
    geometries: Sequence[InputGeometry],
    device: torch.device,
) -> dict[int, torch.Tensor]:
    """Each image's (n, h, w) patch maps: its (n, h, w, 3) uint8 inputs normalised and
    scored in batches of at most `INPUT_BATCH` inputs of one shape (windows of several
    images batch together; inputs are copied one batch at a time)."""
    patch_maps: dict[int, torch.Tensor] = {}
    for indices in group_indices([g.input_shape for g in geometries]).values():
        rows = [(i, j) for i in indices for j in range(geometries[i].n_inputs)]
        scored = torch.cat(
            [
                score_patches(normalise(_gather(pixels, rows[start : start + INPUT_BATCH]), device))
                for start in range(0, len(rows), INPUT_BATCH)
            ]
        )  # (Σn, h/14, w/14)
        counts = [geometries[i].n_inputs for i in indices]
        for i, image_maps in zip(indices, scored.split(counts), strict=True):
            patch_maps[i] = image_maps
    return patch_maps


def _gather(pixels: Sequence[np.ndarray], rows: Sequence[tuple[int, int]]) -> np.ndarray:
    """(B, h, w, 3) uint8: input j of image i for each (i, j) in `rows`."""
    return np.stack([pixels[i][j] for i, j in rows])
