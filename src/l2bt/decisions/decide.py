"""From a map and a score to a decision: mask, verdict and regions (SPEC §7).

A pixel is in the mask when its map value is above the pixel threshold; a part is
`defective` when its score is above the image threshold (strictly above, the side on
which the conformal guarantee of `thresholds.py` bounds false alarms).
"""

from __future__ import annotations

from dataclasses import replace

from l2bt.decisions.regions import find_regions
from l2bt.decisions.thresholds import Thresholds
from l2bt.prediction import Prediction

GOOD, DEFECTIVE = "good", "defective"


def decide(prediction: Prediction, thresholds: Thresholds | None) -> Prediction:
    """The prediction with its mask, verdict and regions; unchanged without thresholds."""
    if thresholds is None:
        return prediction
    mask = prediction.anomaly_map > thresholds.pixel  # (H, W) bool
    verdict = DEFECTIVE if prediction.score > thresholds.image else GOOD
    return replace(
        prediction, mask=mask, verdict=verdict, regions=find_regions(prediction.anomaly_map, mask)
    )
