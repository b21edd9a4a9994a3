"""Anomaly maps drawn over their images, for people to look at.

`overlay` blends a map in 'jet' colours over its image on a fixed scale, `outline`
draws predicted regions' edges, and `annotate` adds below the picture a strip with
the colour bar of that scale, its end values and the image score: the picture grows
by `colour_bar_height(W)` rows and its own pixels keep their coordinates.
`overlay_picture` does all three for one prediction, in an `OverlayStyle`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib import colormaps
from scipy import ndimage

from l2bt.decisions.thresholds import Thresholds
from l2bt.prediction import Prediction

STRIP_ROWS = 256  # rows coloured at a time
OUTLINE_COLOUR = (255, 255, 255)  # white: visible on every colour of 'jet'


def overlay(
    image: np.ndarray, anomaly_map: np.ndarray, vmin: float, vmax: float, alpha: float = 0.5
) -> np.ndarray:
    """(H, W, 3) uint8 image with the (H, W) map in the 'jet' colours blended on top.

    `vmin`/`vmax` fix the colour scale, so maps of different images compare by colour.
    Made STRIP_ROWS rows at a time: the colours are float64 (32 bytes a pixel), which for
    a whole 12 MP image would be 384 MB.
    """
    picture = np.empty(image.shape, np.uint8)
    for top in range(0, image.shape[0], STRIP_ROWS):
        rows = slice(top, top + STRIP_ROWS)
        picture[rows] = _blend(image[rows], anomaly_map[rows], vmin, vmax, alpha)
    return picture


def _blend(
    image: np.ndarray, anomaly_map: np.ndarray, vmin: float, vmax: float, alpha: float
) -> np.ndarray:
    scale = max(vmax - vmin, 1e-12)
    normalised = np.clip((anomaly_map - vmin) / scale, 0.0, 1.0)
    colours = colormaps["jet"](normalised)[..., :3] * 255.0  # (h, W, 4) -> (h, W, 3)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colours
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def outline(
    image: np.ndarray,
    mask: np.ndarray,
    colour: tuple[int, int, int] = OUTLINE_COLOUR,
    width: int = 2,
) -> np.ndarray:
    """(H, W, 3) uint8 image with the boundary of each region of the (H, W) bool mask drawn
    in `colour`, `width` pixels thick, inside the region (so tiny regions stay visible)."""
    inner = ndimage.binary_erosion(mask, iterations=width, border_value=0)
    edge = mask & ~inner  # (H, W) bool
    drawn = image.copy()
    drawn[edge] = colour
    return drawn


def colour_bar_height(width: int) -> int:
    """Height in pixels of the strip `annotate` adds below a picture `width` pixels wide."""
    font_px = _font_px(width)
    return font_px + 2 * round(font_px * 1.4) + 2 * (font_px // 2)


def annotate(
    picture: np.ndarray,
    low: float,
    high: float,
    score: float,
    threshold: float | None = None,
    verdict: str | None = None,
) -> np.ndarray:
    """(H + colour_bar_height(W), W, 3) uint8: `picture` untouched on top (so pixel
    coordinates, region boxes included, keep their meaning), and below it a black strip
    with the 'jet' colour bar from `low` to `high` (the scale `overlay` was given), its two
    end values, and the image score (with the threshold and verdict when known)."""
    from PIL import Image, ImageDraw

    height, width = picture.shape[:2]
    font_px = _font_px(width)
    strip = np.zeros((colour_bar_height(width), width, 3), np.uint8)  # (S, W, 3)
    margin = font_px // 2
    ramp = colormaps["jet"](np.linspace(0.0, 1.0, max(width - 2 * margin, 1)))[:, :3]
    strip[margin : margin + font_px, margin : width - margin] = np.round(ramp * 255.0)
    canvas = Image.fromarray(np.concatenate([picture, strip]))  # (H + S, W, 3)
    draw = ImageDraw.Draw(canvas)
    font = _font(font_px)
    labels_y = height + margin + font_px + font_px // 4
    draw.text((margin, labels_y), f"{low:.4g}", fill=(255, 255, 255), font=font)
    draw.text(
        (width - margin, labels_y), f"{high:.4g}", fill=(255, 255, 255), font=font, anchor="ra"
    )
    line = f"score {score:.4g}"
    if threshold is not None:
        line += f" (threshold {threshold:.4g})"
    if verdict is not None:
        line += f" {verdict}"
    draw.text((margin, labels_y + round(font_px * 1.4)), line, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)


def _font_px(width: int) -> int:
    return int(np.clip(width // 40, 10, 40))


def _font(size: int) -> Any:
    """Pillow's own font (bundled, so offline), at `size` pixels where FreeType is there."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


@dataclass(frozen=True)
class OverlayStyle:
    """How overlays are drawn: the colour scale (None: each map's own range) and the image
    threshold printed beside the score (None: no thresholds)."""

    colour_range: tuple[float, float] | None
    image_threshold: float | None


def image_threshold(deciding: Thresholds | None) -> float | None:
    """The image threshold of the thresholds that decide, if any."""
    return None if deciding is None else deciding.image


def overlay_picture(image: np.ndarray, prediction: Prediction, style: OverlayStyle) -> np.ndarray:
    """The map over the image, regions outlined, and below it the colour bar and score."""
    anomaly_map = prediction.anomaly_map
    low, high = style.colour_range or (float(anomaly_map.min()), float(anomaly_map.max()))
    picture = overlay(image, anomaly_map, low, high)
    if prediction.mask is not None:
        picture = outline(picture, prediction.mask)
    return annotate(picture, low, high, prediction.score, style.image_threshold, prediction.verdict)
