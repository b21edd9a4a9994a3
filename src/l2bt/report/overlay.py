"""Anomaly maps drawn over their images, for people to look at."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps


def overlay(image: np.ndarray, anomaly_map: np.ndarray, vmin: float, vmax: float,
            alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8 image with the (H, W) map in the 'jet' colours blended on top.

    `vmin`/`vmax` fix the colour scale, so maps of different images compare by colour.
    """
    scale = max(vmax - vmin, 1e-12)
    normalised = np.clip((anomaly_map - vmin) / scale, 0.0, 1.0)
    colours = colormaps["jet"](normalised)[..., :3] * 255.0  # (H, W, 4) -> (H, W, 3)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colours
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)
