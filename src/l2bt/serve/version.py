"""One loaded version of a served model: its predictor and worker, its limits, its watch.

A version is made on a loading thread (`ModelVersion.load`: the predictor loaded, warmed
up on one small image, its worker started) and then belongs to the event loop, which
counts the requests it answers (`in_flight`). Once replaced or unloaded it is `retired`:
it answers the requests admitted before, and its worker stops when the last has ended,
so a model has its live version and at most one retiring one in memory. Every answer
carries the version (a digest of the files it was loaded from) and the part's conformal
p-value; parts below the image threshold feed the version's calibration watch.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from l2bt.data.image_io import HeaderCheck
from l2bt.engines import Engine
from l2bt.errors import InputError
from l2bt.prediction import Prediction
from l2bt.preprocess import header_limit
from l2bt.run import CONFIG_FILE, STUDENTS_FILE, RunDescription
from l2bt.serve.batching import BatchObserver, BatchWorker
from l2bt.serve.settings import ServeSettings
from l2bt.serve.watch import CalibrationWatch, WatchState, conformal_p_value

LOG = logging.getLogger("l2bt.serve")
Loader = Callable[[Path], Engine]  # a run folder or an exported file -> its predictor
WARM_UP_HW = (64, 64)


def source_files(source: Path) -> list[Path]:
    """The files a version is made of: a run folder's record and students, or the file."""
    return [source / CONFIG_FILE, source / STUDENTS_FILE] if source.is_dir() else [source]


def signature(source: Path) -> tuple[tuple[str, int, int, int], ...] | None:
    """What changes when the files are replaced (name, size, mtime, inode); None while a
    file is missing (a replacement being moved into place)."""
    try:
        stats = [(p.name, p.stat()) for p in source_files(source)]
    except OSError:
        return None
    return tuple((name, s.st_size, s.st_mtime_ns, s.st_ino) for name, s in stats)


def version_digest(source: Path) -> str:
    """A SHA-256 prefix (16 hex digits) of the files' contents."""
    digest = hashlib.sha256()
    for path in source_files(source):
        digest.update(path.name.encode())
        with path.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Answer:
    """A version's prediction of one part, with what the service adds to it."""

    prediction: Prediction
    p_value: float | None


class ModelVersion:
    """See the module docstring. Built by `load` on a loading thread."""

    def __init__(
        self,
        predictor: Engine,
        digest: str,
        settings: ServeSettings,
        on_batch: BatchObserver | None = None,
    ) -> None:
        self.predictor = predictor
        self.digest = digest
        self.record: RunDescription = predictor.record
        self.description = predictor.describe()
        self.header_check: HeaderCheck = header_limit(self.record.teacher, settings.max_pixels)
        self.worker = BatchWorker(predictor, settings.batch_size, on_batch)
        self.loaded_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.in_flight = 0
        self.retired = False
        scores = None if self.record.thresholds is None else self.record.thresholds.image_scores
        self.calibration_scores = None if scores is None else sorted(scores)
        self.watch, self.watch_off = self._watch(settings.drift_alarm)

    @classmethod
    def load(
        cls,
        source: Path,
        loader: Loader,
        settings: ServeSettings,
        on_batch: BatchObserver | None = None,
    ) -> ModelVersion:
        """Load, warm up (one small image through the whole road) and start a version."""
        digest = version_digest(source)
        version = cls(loader(source), digest, settings, on_batch)
        version.predictor.predict_maps([np.full((*WARM_UP_HW, 3), 128, np.uint8)])
        version.worker.start()
        return version

    def _watch(self, delta: float) -> tuple[CalibrationWatch | None, str | None]:
        """The calibration watch, or None and why there is none."""
        thresholds = self.record.thresholds
        if thresholds is None or self.calibration_scores is None:
            return None, "the run stores no calibration scores (calibrate it with this l2bt)"
        try:
            rng = np.random.default_rng()
            return CalibrationWatch(self.calibration_scores, thresholds.image, delta, rng), None
        except InputError as e:
            return None, e.problem

    async def predict(self, image: np.ndarray) -> Prediction:
        """The decided prediction of one image, from this version's worker."""
        return await asyncio.wrap_future(self.worker.submit(image))

    def answered(self, prediction: Prediction) -> Answer:
        """The part's p-value; the watch counts it (on the event loop: one thread)."""
        if self.watch is not None:
            drifted = self.watch.state.drifted
            update = self.watch.observe(prediction.score)
            if update.drifted and not drifted:
                state = self.watch.state
                LOG.warning(
                    "calibration: drifted (version %s, after %d parts, %d below the threshold)",
                    self.digest,
                    state.parts_seen,
                    state.parts_watched,
                )
            return Answer(prediction, update.p_value)
        if self.calibration_scores is None:
            return Answer(prediction, None)
        return Answer(prediction, conformal_p_value(self.calibration_scores, prediction.score))

    @property
    def watch_state(self) -> WatchState | None:
        return None if self.watch is None else self.watch.state

    def stop(self, timeout: float) -> None:
        """End the worker (its batch in progress first, up to `timeout` seconds)."""
        self.worker.stop(timeout)
