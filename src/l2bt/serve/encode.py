"""A prediction as the service's JSON: maps and masks as base64 image files.

`map=tiff` is the float32 map exactly as `l2bt predict` writes it; `map=png` an 8-bit
grayscale picture of it, scaled linearly so that the low end of `map_range` is 0 and
the high end 255 (clipped). The range is the run's colour scale (its record's
`colour_range`: defect-free patch scores, median to maximum, as `l2bt predict`'s overlays
use), so pictures of different images compare by brightness; a run that does not store
it uses each map's own minimum and maximum. Memory per image: the map (4 bytes per
pixel), its file and the file's base64 text (4/3 of the file).
"""

from __future__ import annotations

import base64
import io
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from l2bt.maps.layout import map_tiff_bytes
from l2bt.prediction import Prediction
from l2bt.serve.schemas import MapFormat, MaskFormat, PredictResponse


def map_png(anomaly_map: np.ndarray, low: float, high: float) -> bytes:
    scaled = (anomaly_map.astype(np.float64) - low) / max(high - low, 1e-12)
    levels = np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)  # (H, W)
    return png(levels)


def mask_png(mask: np.ndarray) -> bytes:
    return png(mask.astype(np.uint8) * 255)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def base64_text(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def picture_range(
    anomaly_map: np.ndarray, colour_range: tuple[float, float] | None
) -> tuple[float, float]:
    """The map values drawn black and white in `map=png` (see the module docstring)."""
    return colour_range or (float(anomaly_map.min()), float(anomaly_map.max()))


@dataclass(frozen=True)
class Made:
    """Who made an answer: the model's name, the version's digest, the part's p-value."""

    model: str
    version: str
    p_value: float | None


def prediction_response(
    prediction: Prediction,
    threshold: float | None,
    made: Made,
    started: float,
    map_format: MapFormat,
    mask_format: MaskFormat,
    colour_range: tuple[float, float] | None,
) -> PredictResponse:
    """The JSON body for one prediction; `started`: when the request arrived
    (`time.perf_counter()`); `colour_range`: the run's (see `picture_range`)."""
    anomaly_map = prediction.anomaly_map
    height, width = anomaly_map.shape
    fields: dict[str, Any] = {
        "score": float(prediction.score),
        "verdict": prediction.verdict,
        "threshold": threshold,
        "width": width,
        "height": height,
        "regions": [asdict(r) for r in prediction.regions],
        "model": made.model,
        "version": made.version,
        "p_value": made.p_value,
    }
    if map_format == "tiff":
        fields["anomaly_map"] = base64_text(map_tiff_bytes(anomaly_map))
    elif map_format == "png":
        low, high = picture_range(anomaly_map, colour_range)
        fields["anomaly_map"] = base64_text(map_png(anomaly_map, low, high))
        fields["map_range"] = (low, high)
    if mask_format == "png" and prediction.mask is not None:
        fields["mask"] = base64_text(mask_png(prediction.mask))
    fields["seconds"] = round(time.perf_counter() - started, 6)
    return PredictResponse.model_validate(fields)
