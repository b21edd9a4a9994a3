"""Thresholds for any predictor from its maps of calibration images.

The same function serves every method of the benchmark (l2bt, l2bt@N, patchcore,
dinomaly), `l2bt fit` and `l2bt calibrate`: it predicts each calibration image once and
keeps two numbers per image (its score and its map maximum), so memory does not grow
with the images' size. With a pixel false-alarm rate β it also sets the segmentation
threshold by conformal risk control (`risk.py`), which reads the maps several times: they
are spilled to a temporary folder as float32 files and memory-mapped from there, one at a
time (disk: 4 bytes per calibration pixel, removed at the end).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from l2bt.config import FALSE_ALARM_RATE
from l2bt.data.image_io import read_image
from l2bt.decisions.cleanup import Cleanup
from l2bt.decisions.risk import check_pixel_false_alarm_rate, segmentation_threshold
from l2bt.decisions.thresholds import Thresholds, check_false_alarm_rate, thresholds_from_scores
from l2bt.prediction import Predictor
from l2bt.utils.progress import progress_bar


@dataclass(frozen=True)
class CalibrationSettings:
    """What thresholds are set at (SPEC §7): the false-alarm rate α of the image and pixel
    thresholds, the pixel false-alarm rate β of the segmentation threshold (None: none),
    and the clean-up of every mask. Checked when made."""

    false_alarm_rate: float = FALSE_ALARM_RATE
    pixel_false_alarm_rate: float | None = None
    cleanup: Cleanup = field(default_factory=Cleanup)

    def __post_init__(self) -> None:
        check_false_alarm_rate(self.false_alarm_rate)
        if self.pixel_false_alarm_rate is not None:
            check_pixel_false_alarm_rate(self.pixel_false_alarm_rate)


@dataclass(frozen=True)
class Calibration:
    """The thresholds and what they were computed from (for plots and reports)."""

    thresholds: Thresholds
    image_scores: tuple[float, ...]
    map_maxima: tuple[float, ...]


def calibrate(
    predictor: Predictor,
    images: Sequence[Path],
    settings: CalibrationSettings,
    batch_size: int = 4,
) -> Calibration:
    """Image and pixel thresholds at the false-alarm rate α of `settings` from defect-free
    `images` (read at the predictor's bit depth); with β, also the segmentation threshold
    (masks cleaned by the clean-up, which is stored with the thresholds either way)."""
    alpha, beta = settings.false_alarm_rate, settings.pixel_false_alarm_rate
    cleanup = settings.cleanup
    with tempfile.TemporaryDirectory(prefix="l2bt-calibration-") as scratch:
        spill = None if beta is None else Path(scratch)
        scores, maxima = _predict(predictor, images, batch_size, spill)
        thresholds = thresholds_from_scores(scores, maxima, alpha, [str(p) for p in images])
        thresholds = replace(thresholds, cleanup=cleanup)
        if spill is not None and beta is not None:
            maps = [spill / f"{i}.npy" for i in range(len(images))]
            found = segmentation_threshold(lambda: _mapped(maps), beta, cleanup)
            thresholds = thresholds.with_segmentation(found)
    return Calibration(thresholds, tuple(scores), tuple(maxima))


def _predict(
    predictor: Predictor,
    images: Sequence[Path],
    batch_size: int,
    spill: Path | None,
) -> tuple[list[float], list[float]]:
    """Each image's score and map maximum; with `spill`, each map saved there as `<i>.npy`."""
    scores: list[float] = []
    maxima: list[float] = []
    depth = predictor.record.bit_depth
    with progress_bar(total=len(images), desc="calibration", unit="img") as bar:
        for start in range(0, len(images), batch_size):
            batch = [read_image(p, bit_depth=depth) for p in images[start : start + batch_size]]
            for prediction in predictor.predict_maps(batch):
                if spill is not None:
                    values = prediction.anomaly_map.astype(np.float32, copy=False)
                    np.save(spill / f"{len(scores)}.npy", values)
                scores.append(prediction.score)
                maxima.append(float(prediction.anomaly_map.max()))
            bar.update(len(batch))
    return scores, maxima


def _mapped(paths: Sequence[Path]) -> Iterator[np.ndarray]:
    for path in paths:
        yield np.load(path, mmap_mode="r")
