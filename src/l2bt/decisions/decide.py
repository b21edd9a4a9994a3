"""From a map and a score to a decision: mask, verdict and regions (SPEC §7).

A pixel is in the mask when its map value is above the mask threshold (the segmentation
threshold when set, else the pixel threshold), after the run's clean-up; a part is
`defective` when its score is above the image threshold (strictly above, the side on
which the conformal guarantee of `thresholds.py` bounds false alarms). `decide` is the one
place a prediction is decided: predictors give undecided maps (`predict_maps`), and
`decided` decides them at the predictor's own thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from functools import partial

import numpy as np

from l2bt.decisions.cleanup import Cleanup
from l2bt.decisions.regions import find_regions
from l2bt.decisions.thresholds import Thresholds
from l2bt.metrics.evaluator import MaskRule
from l2bt.prediction import Prediction, Predictor

GOOD, DEFECTIVE = "good", "defective"


def decide(prediction: Prediction, thresholds: Thresholds | None) -> Prediction:
    """The prediction with its mask, verdict and regions; unchanged without thresholds."""
    if thresholds is None:
        return prediction
    mask = thresholds.cleanup.apply(prediction.anomaly_map > thresholds.mask_threshold)
    verdict = DEFECTIVE if prediction.score > thresholds.image else GOOD
    return replace(
        prediction, mask=mask, verdict=verdict, regions=find_regions(prediction.anomaly_map, mask)
    )


def decided(predictor: Predictor, images: Sequence[np.ndarray]) -> list[Prediction]:
    """The predictor's predictions of (H, W, 3) uint8 `images`, decided at the thresholds
    of its record (undecided when it has none)."""
    thresholds = predictor.record.thresholds
    return [decide(p, thresholds) for p in predictor.predict_maps(images)]


def stored_mask_rules(thresholds: Thresholds) -> dict[str, MaskRule]:
    """Every stored way to binarise a map, by name, for SegF1 at each: "pixel" (map >
    the pixel threshold on map maxima), "segmentation" (map > the risk-controlled
    threshold, when set), and each again with the run's clean-up ("+cleanup"), when it has
    one. The masks `decide` writes are the last of these."""
    rules: dict[str, MaskRule] = {"pixel": partial(_above, threshold=thresholds.pixel)}
    if thresholds.segmentation is not None:
        rules["segmentation"] = partial(_above, threshold=thresholds.segmentation)
    if not thresholds.cleanup.is_identity:
        for name, rule in list(rules.items()):
            rules[f"{name}+cleanup"] = partial(_cleaned, rule=rule, cleanup=thresholds.cleanup)
    return rules


def _above(anomaly_map: np.ndarray, threshold: float) -> np.ndarray:
    return np.asarray(anomaly_map > threshold)  # (H, W) bool


def _cleaned(anomaly_map: np.ndarray, rule: MaskRule, cleanup: Cleanup) -> np.ndarray:
    return cleanup.apply(rule(anomaly_map))
