"""What predicting one image gives: a full-resolution map, a score and, with thresholds,
a decision (mask, verdict, defect regions)."""

from __future__ import annotations

from dataclasses import dataclass, field

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
