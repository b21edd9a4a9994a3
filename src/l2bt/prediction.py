"""What predicting one image gives: a full-resolution map, a score and, with thresholds,
a decision (mask, verdict, defect regions); and what every predictor is."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from l2bt.run import RunDescription


@dataclass(frozen=True)
class Region:
    """One 8-connected component of a predicted mask (a row of `regions.csv`, SPEC §7);
    `region` counts from 1, x1 and y1 are exclusive."""

    region: int
    area_px: int
    x0: int
    y0: int
    x1: int  # exclusive
    y1: int  # exclusive
    max_score: float
    mean_score: float


@dataclass(frozen=True)
class Prediction:
    """An anomaly map at the input image's exact height × width and the image score.

    With calibrated thresholds (SPEC §7) also the decision: `mask` (bool H × W, map >
    pixel threshold), `verdict` ("good" or "defective": score > image threshold) and
    `regions` (the mask's 8-connected components). Undecided, they are None, None and [].
    """

    anomaly_map: np.ndarray
    score: float
    mask: np.ndarray | None = None
    verdict: str | None = None
    regions: list[Region] = field(default_factory=list)


class Predictor(Protocol):
    """Anything that turns (H, W, 3) uint8 images into undecided predictions at their own
    size (an L2BT model, a benchmarked method, an ONNX Runtime engine), described by its
    run's record (thresholds, bit depth, input settings, colour scale)."""

    @property
    def record(self) -> RunDescription: ...

    def predict_maps(self, images: Sequence[np.ndarray]) -> list[Prediction]: ...
