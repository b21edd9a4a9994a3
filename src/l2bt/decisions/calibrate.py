"""Thresholds for any predictor from its maps of calibration images.

The same function serves every method of the benchmark (l2bt, l2bt@N, patchcore,
dinomaly), `l2bt fit` and `l2bt calibrate`: it predicts each calibration image once and
keeps two numbers per image (its score and its map maximum), so memory does not grow
with the images' size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from l2bt.data.image_io import read_image
from l2bt.decisions.thresholds import Thresholds, check_false_alarm_rate, thresholds_from_scores
from l2bt.prediction import Predictor


@dataclass(frozen=True)
class Calibration:
    """The thresholds and what they were computed from (for plots and reports)."""

    thresholds: Thresholds
    image_scores: tuple[float, ...]
    map_maxima: tuple[float, ...]


def calibrate(
    predictor: Predictor,
    images: Sequence[Path],
    alpha: float,
    batch_size: int = 4,
    progress: bool = True,
) -> Calibration:
    """Image and pixel thresholds at false-alarm rate `alpha` from defect-free `images`."""
    check_false_alarm_rate(alpha)
    scores: list[float] = []
    maxima: list[float] = []
    bar = tqdm(total=len(images), desc="calibration", unit="img", disable=not progress)
    with bar:
        for start in range(0, len(images), batch_size):
            batch = [read_image(p) for p in images[start : start + batch_size]]
            for prediction in predictor.predict_batch(batch):
                scores.append(prediction.score)
                maxima.append(float(prediction.anomaly_map.max()))
            bar.update(len(batch))
    thresholds = thresholds_from_scores(scores, maxima, alpha, [str(p) for p in images])
    return Calibration(thresholds, tuple(scores), tuple(maxima))
