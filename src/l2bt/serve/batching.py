"""One worker thread that owns the predictor and batches the requests waiting for it.

The predictor is called from this thread only: a torch model is not re-entrant across
threads, and one caller keeps the device's memory to one batch at a time. Requests
hand in their decoded image and get a `concurrent.futures.Future`. Whenever the worker
is free it takes the oldest waiting image and, in arrival order, up to `batch_size - 1`
more of the same height and width; images of other sizes keep their place for a later
batch, and the oldest image always goes next, so none waits for ever. There is no
batching delay: a request that finds the worker idle is predicted at once, and batches
form from what arrives while the worker is busy.

The queue itself is not bounded here: the app admits at most `queue_size` requests at
once (see `app.py`), which bounds it. A predictor that raises fails the batch's
requests with its exception and the worker goes on; a batch of several that fails is
retried image by image, so one image that breaks the predictor fails alone. After each
batch `on_batch(size, seconds each image waited, seconds predicting)` is called on the
worker's thread (the service's metrics).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from l2bt.decisions.decide import decided
from l2bt.prediction import Prediction, Predictor

LOG = logging.getLogger("l2bt.serve")
STOP_TIMEOUT_S = 60.0
BatchObserver = Callable[[int, list[float], float], None]


class WorkerStopped(Exception):
    """The worker is stopping: no new image is taken."""


@dataclass
class Job:
    image: np.ndarray  # (H, W, 3) uint8
    future: Future[Prediction] = field(default_factory=Future)
    submitted: float = field(default_factory=time.monotonic)

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[0], self.image.shape[1]


class BatchWorker:
    """Predicts submitted images on its own thread, batching those of one size."""

    def __init__(
        self, predictor: Predictor, batch_size: int, on_batch: BatchObserver | None = None
    ) -> None:
        self._predictor = predictor
        self._batch_size = batch_size
        self.on_batch = on_batch
        self._jobs: deque[Job] = deque()
        self._changed = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="l2bt-predict", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Let the batch in progress finish (up to `timeout` seconds; the thread is a
        daemon and ends with the process), fail the waiting requests, end the thread."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                LOG.warning("the predict worker did not stop within %.1f s", timeout)
        with self._changed:
            left, self._jobs = list(self._jobs), deque()
        for job in left:
            job.future.set_exception(WorkerStopped("the server is shutting down"))

    def submit(self, image: np.ndarray) -> Future[Prediction]:
        job = Job(image)
        with self._changed:
            if self._stopping:
                raise WorkerStopped("the server is shutting down")
            self._jobs.append(job)
            self._changed.notify()
        return job.future

    def waiting(self) -> int:
        """Images submitted and not yet taken into a batch."""
        with self._changed:
            return len(self._jobs)

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._predict([job for job in batch if job.future.set_running_or_notify_cancel()])

    def _next_batch(self) -> list[Job] | None:
        """The oldest waiting job and up to batch_size - 1 later ones of its size; None
        when stopping."""
        with self._changed:
            while not self._jobs and not self._stopping:
                self._changed.wait()
            if self._stopping:
                return None
            first = self._jobs.popleft()
            batch, others = [first], deque[Job]()
            for job in self._jobs:
                if len(batch) < self._batch_size and job.size == first.size:
                    batch.append(job)
                else:
                    others.append(job)
            self._jobs = others
            return batch

    def _predict(self, batch: list[Job]) -> None:
        if not batch:
            return
        started = time.monotonic()
        try:
            predictions = decided(self._predictor, [job.image for job in batch])
            if len(predictions) != len(batch):
                raise RuntimeError(
                    f"the predictor returned {len(predictions)} predictions for {len(batch)} images"
                )
        except Exception as error:
            if len(batch) > 1:  # find the image that fails: the others still get answers
                for job in batch:
                    self._predict([job])
                return
            LOG.error("prediction failed", exc_info=error)
            batch[0].future.set_exception(error)
            return
        if self.on_batch is not None:
            waited = [started - job.submitted for job in batch]
            self.on_batch(len(batch), waited, time.monotonic() - started)
        for job, prediction in zip(batch, predictions, strict=True):
            job.future.set_result(prediction)
