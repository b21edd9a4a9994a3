"""What predicting one image gives: a full-resolution map, a score and, with thresholds,
a decision (mask, verdict, defect regions)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from l2bt.decisions.regions import Region


@dataclass(frozen=True)
class Prediction:
    """An anomaly map at the input image's exact height × width and the image score.

    With calibrated thresholds (SPEC §7) also the decision: `mask` (bool H × W, map >
    pixel threshold), `verdict` ("good" or "defective": score > image threshold) and
    `regions` (the mask's 8-connected components). Without thresholds they are None,
    None and [].
    """

    anomaly_map: np.ndarray
    score: float
    mask: np.ndarray | None = None
    verdict: str | None = None
    regions: list[Region] = field(default_factory=list)


class Predictor(Protocol):
    """Anything that turns (H, W, 3) uint8 images into predictions at their own size:
    an L2BT model, a benchmarked method, an ONNX Runtime engine."""

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[Prediction]: ...
