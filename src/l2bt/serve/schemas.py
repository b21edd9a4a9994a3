"""The JSON the service answers with (SPEC §8), as typed models."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

MapFormat = Literal["tiff", "png", "none"]
MaskFormat = Literal["png", "none"]


class RegionOut(BaseModel):
    """One predicted defect region: an 8-connected component of the mask."""

    region: int = Field(description="1-based, in scan order of the region's first pixel")
    area_px: int
    x0: int
    y0: int
    x1: int = Field(description="exclusive")
    y1: int = Field(description="exclusive")
    max_score: float
    mean_score: float


class PredictResponse(BaseModel):
    """One image's prediction. `anomaly_map`, `map_range` and `mask` are present only
    when asked for (`?map=tiff|png`, `?mask=png`)."""

    score: float = Field(description="image-level anomaly score")
    verdict: Literal["good", "defective"] | None = Field(
        description="score above the image threshold; null when the run has no thresholds"
    )
    threshold: float | None = Field(description="the image threshold, or null")
    width: int
    height: int
    regions: list[RegionOut] = Field(description="empty when the run has no thresholds")
    seconds: float = Field(description="time this request spent in the server")
    model: str = Field(description="teacher/weights id/run name")
    version: str = Field(description="digest of the model files that made this answer")
    p_value: float | None = Field(
        description="the part's conformal p-value against the calibration images' scores, "
        "(1 + #calibration scores >= score) / (n + 1); null without them"
    )
    anomaly_map: str | None = Field(
        default=None,
        description="base64: a float32 TIFF (map=tiff), or an 8-bit grayscale "
        "PNG (map=png) of the map scaled linearly from map_range[0] (0) to map_range[1] (255)",
    )
    map_range: tuple[float, float] | None = Field(
        default=None, description="map=png only: the map values drawn as 0 and 255"
    )
    mask: str | None = Field(default=None, description="base64 PNG, uint8 0/255, H x W")


class ErrorResponse(BaseModel):
    error: str = Field(description="what went wrong, one plain line")


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class WatchOut(BaseModel):
    """The calibration watch of a model version (`serve/watch.py`)."""

    parts: int = Field(description="parts answered since this version was loaded")
    watched: int = Field(description="parts below the image threshold that fed the watch")
    log_martingale: float
    alarm_at: float = Field(description="1/δ: the martingale's value that raises the flag")
    drifted_at: int | None = Field(description="the part count at which the flag was raised")


class ReplacementOut(BaseModel):
    """A newer version of the model's files, being loaded or failed to load."""

    status: Literal["loading", "failed"]
    reason: str | None


class ModelOut(BaseModel):
    """One served model (GET /v1/models)."""

    name: str
    source: str = Field(description="the run folder or ONNX file it is loaded from")
    status: Literal["loading", "ready", "failed", "unloaded"]
    reason: str | None = Field(description="why it failed to load, one line")
    version: str | None = Field(description="digest of the files of the version serving")
    loaded_at: str | None = Field(description="when that version was loaded (ISO 8601)")
    in_flight: int = Field(description="requests being answered")
    calibration: Literal["holding", "drifted", "off"] = Field(
        description="the calibration watch of the version serving: drifted once its flag is up"
    )
    watch: WatchOut | None = Field(description="the watch's figures; null when it is off")
    watch_off: str | None = Field(description="why there is no watch, if there is none")
    replacement: ReplacementOut | None


class ModelsOut(BaseModel):
    models: list[ModelOut]
