"""A zoo model's raw maps brought back to each image's H × W (SPEC §12).

At its own size a model sees the image stretched to its R × R input (Dinomaly a C × C
centre crop of it). Its C × C map is first put back in the R × R frame (the crop's
border edge-replicated), then resized bilinearly (half-pixel centres, no antialiasing) to
exactly H × W: the paper's treatment of low-resolution competitors. With `+tiles` each
T × T window's map is put back in its T × T frame the same way, and the windows go down
l2bt's tiles road (`l2bt.tiling`): blended with weights that sum to one, smoothed once
with the paper's box blurs (`anomaly_map.SMOOTHING`), cropped to the image (resized when
the windows were rescaled). Memory: one frame of the blended map and its running totals.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from l2bt.anomaly_map import smooth
from l2bt.tiling import TileLayout, frame_to_image, stitch


def uncrop(maps: torch.Tensor, frame: int) -> torch.Tensor:
    """(B, C, C) maps of a centre crop -> (B, frame, frame), the border edge-replicated
    (torchvision's crop starts at round((frame − C) / 2))."""
    crop = maps.shape[-1]
    if crop == frame:
        return maps
    start = round((frame - crop) / 2.0)
    padding = (start, frame - crop - start, start, frame - crop - start)
    return F.pad(maps[:, None], padding, mode="replicate")[:, 0]  # (B, 1, frame, frame) -> (B, …)


def to_image_size(frame_map: torch.Tensor, height: int, width: int) -> np.ndarray:
    """(R, R) map -> (H, W) float32, bilinear with half-pixel centres."""
    resized = F.interpolate(
        frame_map.float()[None, None], size=(height, width), mode="bilinear", align_corners=False
    )
    return resized[0, 0].cpu().numpy()  # (1, 1, H, W) -> (H, W)


def tiles_to_image(window_maps: torch.Tensor, layout: TileLayout) -> np.ndarray:
    """(N, T, T) window maps (row-major, as `layout.windows`) -> (H, W) float32."""
    frame = stitch(window_maps.float(), layout)  # (frame_h, frame_w)
    smoothed = smooth(frame[None, None])  # (1, 1, frame_h, frame_w)
    return frame_to_image(smoothed, layout).cpu().numpy()
