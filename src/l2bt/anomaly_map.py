"""From teacher and student features to a full-resolution anomaly map and an image score.

Per patch, the map is ‖n(f(t_a)) − n(t_b)‖ · ‖n(b(t_b)) − n(t_a)‖ with n the L2
normalisation, f the forward and b the backward student, t_a and t_b the teacher's
features of the two layers. The patch grid is upsampled bilinearly to the frame of the
input geometry (the padded square in `pad` mode, the image itself in `aspect` mode),
smoothed with five 5×5 then three 7×7 zero-padded box blurs (the paper's smoothing), and
cropped back to the original image's pixels. The image score is the mean of the top
k = ⌊0.001 · H · W⌋ map pixels (at least one), as the published code computes it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from l2bt.preprocess import InputGeometry

BLUR_PASSES = ((5, 5), (7, 3))  # (box side, repetitions)


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


def box_blur(maps: torch.Tensor, side: int) -> torch.Tensor:
    """Zero-padded side×side mean filter on (B, 1, H, W), as two separable passes."""
    pad = side // 2
    maps = F.avg_pool2d(maps, (side, 1), stride=1, padding=(pad, 0), count_include_pad=True)
    return F.avg_pool2d(maps, (1, side), stride=1, padding=(0, pad), count_include_pad=True)


def smooth(maps: torch.Tensor) -> torch.Tensor:
    """The paper's smoothing of (B, 1, H, W) maps."""
    for side, repetitions in BLUR_PASSES:
        for _ in range(repetitions):
            maps = box_blur(maps, side)
    return maps


def to_image_maps(patch_maps: torch.Tensor, geometry: InputGeometry) -> np.ndarray:
    """(B, h, w) patch maps of images sharing one geometry -> (B, H, W) float32 maps."""
    maps = patch_maps.float().unsqueeze(1)  # (B, h, w) -> (B, 1, h, w)
    maps = F.interpolate(maps, size=(geometry.frame_height, geometry.frame_width),
                         mode="bilinear", align_corners=False)
    maps = smooth(maps)
    rows = slice(geometry.top, geometry.top + geometry.height)
    cols = slice(geometry.left, geometry.left + geometry.width)
    maps = maps[:, 0, rows, cols]  # (B, 1, frame_h, frame_w) -> (B, H, W)
    return maps.cpu().numpy().astype(np.float32, copy=False)


def top_count(n_pixels: int) -> int:
    """k = ⌊0.001 · n⌋, at least 1: how many pixels the image score averages.

    Integer arithmetic; equal to the published `int(0.001 * n)` for every n (the double
    0.001 is slightly above 1/1000 and n/1000 is never within rounding of an integer
    from below)."""
    return max(1, n_pixels // 1000)


def image_score(anomaly_map: np.ndarray) -> float:
    """Mean of the top k = ⌊0.001 · H · W⌋ map pixels (at least one pixel)."""
    values = anomaly_map.ravel()
    k = top_count(values.size)
    top = np.partition(values, values.size - k)[values.size - k:]
    return float(top.astype(np.float64).mean())
