"""Anomaly maps drawn over their images, for people to look at."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from scipy import ndimage

OUTLINE_COLOUR = (255, 255, 255)  # white: visible on every colour of 'jet'


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


def outline(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = OUTLINE_COLOUR,
            width: int = 2) -> np.ndarray:
    """(H, W, 3) uint8 image with the boundary of each region of the (H, W) bool mask drawn
    in `colour`, `width` pixels thick, inside the region (so tiny regions stay visible)."""
    inner = ndimage.binary_erosion(mask, iterations=width, border_value=0)
    edge = mask & ~inner  # (H, W) bool
    drawn = image.copy()
    drawn[edge] = colour
    return drawn
