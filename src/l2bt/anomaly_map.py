"""The one predict road: images -> teacher inputs -> patch anomaly -> full-resolution maps.

`predict_images` is the road for every method that scores the teacher's patches (L2BT's
students, PatchCore's memory bank, Dinomaly's decoder): preprocess each image (its
`InputGeometry`: one input, or its windows in tiles mode), run the scorer on batches of
at most `INPUT_BATCH` inputs that share a shape, upsample, smooth and crop the maps of
images that share a geometry together, score each image (preprocessing and scores on
all the host's cores). Tiles mode upsamples each window's map to T × T, stitches them
(`tiling.stitch`), smooths the frame once, crops/resizes it to H × W. The methods differ
only in how they score patches (and Dinomaly in its smoothing).

L2BT's scorer: per patch, ‖n(f(t_a)) − n(t_b)‖ · ‖n(b(t_b)) − n(t_a)‖ with n the L2
normalisation, f and b the forward and backward students, t_a and t_b the teacher's
features of the two layers. The patch grid is upsampled bilinearly to the frame of the
input geometry (the padded square in `pad` mode, the image itself in `aspect` mode),
smoothed with five 5×5 then three 7×7 zero-padded box blurs (the paper's smoothing), and
cropped back to the original image's pixels. The image score is the mean of the top
k = ⌊0.001 · H · W⌋ map pixels (at least one), as the published code computes it. Memory:
the inputs of one call, one batch of activations, one map per image (tiles: + its frame).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from l2bt.config import TeacherConfig
from l2bt.prediction import Prediction
from l2bt.preprocess import InputGeometry, group_indices, normalise, teacher_pixels
from l2bt.tiling import frame_to_image, stitch_windows
from l2bt.utils.device import to_host
from l2bt.utils.host import host_map

BLUR_PASSES = ((5, 5), (7, 3))  # (box side, repetitions)
TOP_FRACTION = 0.001  # of the map's pixels, averaged into the image score
INPUT_BATCH = 16  # teacher inputs (images or windows) per scorer call

PatchScorer = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, h, w) -> (B, h/14, w/14)
MapMaker = Callable[[torch.Tensor, InputGeometry], np.ndarray]  # (B·n, h, w) -> (B, H, W)
SmoothingPass = Callable[[torch.Tensor], torch.Tensor]  # (B, 1, H, W) -> (B, 1, H, W)
Smoothing = Sequence[SmoothingPass]  # applied one after another


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


# The paper's smoothing: five 5 × 5 then three 7 × 7 box blurs, each a row and a column pass.
SMOOTHING: Smoothing = tuple(
    partial(box_pass, side=side, dim=dim)
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


def to_image_maps(
    patch_maps: torch.Tensor,
    geometry: InputGeometry,
    smoothing: Smoothing = SMOOTHING,
    align_corners: bool = False,
) -> np.ndarray:
    """(B · n, h, w) patch maps of B images sharing one geometry (n = its inputs per
    image, image after image) -> (B, H, W) float32 maps: bilinear upsampling to the
    geometry's frame (to T × T and stitched, in tiles mode), `smoothing`, the crop."""
    if geometry.tiles is not None:
        return _tiled_image_maps(patch_maps, geometry, smoothing, align_corners)
    maps = _upsample(patch_maps, (geometry.frame_height, geometry.frame_width), align_corners)
    maps = smooth(maps, smoothing)
    rows = slice(geometry.top, geometry.top + geometry.height)
    cols = slice(geometry.left, geometry.left + geometry.width)
    maps = maps[:, 0, rows, cols]  # (B, 1, frame_h, frame_w) -> (B, H, W)
    return to_host(maps.float())


def _upsample(patch_maps: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    """(B, h, w) -> (B, 1, size) float32, bilinear."""
    maps = patch_maps.float().unsqueeze(1)  # (B, h, w) -> (B, 1, h, w)
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=align_corners)


def _tiled_image_maps(
    patch_maps: torch.Tensor, geometry: InputGeometry, smoothing: Smoothing, align_corners: bool
) -> np.ndarray:
    """Tiles mode of `to_image_maps`: per image, its windows' maps stitched into one frame,
    smoothed once, cropped and resized back to H × W, and copied into the output (whose
    pages are touched only then: never a second stacked copy). Peak: the frame's two
    stitching buffers, then two frame-sized maps while smoothing (nothing holds the frame
    once its first pass has run)."""
    layout = geometry.tiles
    assert layout is not None
    size = (layout.size, layout.size)
    images = patch_maps.reshape(-1, layout.count, *patch_maps.shape[1:])  # (B, n, h, w)
    maps = np.empty((images.shape[0], layout.height, layout.width), np.float32)
    for b, image in enumerate(images):  # (n, h, w) each

        def window(index: int, image: torch.Tensor = image) -> torch.Tensor:
            return _upsample(image[index : index + 1], size, align_corners)[0, 0]  # (T, T)

        # The stitched frame (stitched one window at a time) is held by `smooth` alone,
        # which frees it after its first pass: (fh, fw) -> (1, 1, fh, fw).
        frame = smooth(stitch_windows(window, layout, patch_maps.device)[None, None], smoothing)
        to_host(frame_to_image(frame, layout), out=maps[b])
    return maps


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
