"""The service's limits, checked once when the app is made."""

from __future__ import annotations

from dataclasses import dataclass

from l2bt.errors import InputError
from l2bt.serve.watch import check_drift_alarm

KILOBYTE = 1024
MEGABYTE = 1024 * KILOBYTE


@dataclass(frozen=True)
class ServeSettings:
    """What `l2bt serve` is allowed to hold and do at once.

    `batch_size`: most images of one size predicted together. `queue_size`: most requests
    admitted at once once their body has arrived (decoding, waiting for the worker or
    being predicted); one more is answered 503. `max_pixels`: most pixels of the largest
    array one image needs (the image, the teacher input or the frame its map is upsampled
    to), from the file's header before any pixel is decoded. `max_body_bytes`: largest
    request body, counted while it arrives; the bodies of all requests together hold at
    most `queue_size` × `max_body_bytes`. `body_timeout` (seconds), `min_body_rate`
    (bytes per second): the body's deadlines (see `body.py`). `shutdown_timeout`
    (seconds): how long a stopping server lets the requests being predicted finish.
    `poll_seconds`: how often the served files are looked at for a replacement (0: never).
    `max_loaded`: most models loaded at once (None: all; the least recently used is
    unloaded past it). `drift_alarm`: δ of the calibration watch (`watch.py`).
    `queue_size` and `batch_size` are per model: each model has its own queue.
    """

    batch_size: int = 4
    queue_size: int = 16
    max_pixels: int = 50_000_000
    max_body_bytes: int = 200 * MEGABYTE
    body_timeout: float = 30.0
    min_body_rate: float = 64.0 * KILOBYTE
    shutdown_timeout: float = 10.0
    poll_seconds: float = 10.0
    max_loaded: int | None = None
    drift_alarm: float = 0.01

    def __post_init__(self) -> None:
        flags = {
            "batch_size": "--batch-size",
            "queue_size": "--queue-size",
            "max_pixels": "--max-pixels",
            "max_body_bytes": "--max-body-mb",
            "body_timeout": "--body-timeout",
            "min_body_rate": "--min-body-rate",
            "shutdown_timeout": "--shutdown-timeout",
        }
        for name, flag in flags.items():
            value = getattr(self, name)
            if not value > 0:  # also refuses NaN
                raise InputError(f"{flag} must be positive, got {value}")
        if not self.poll_seconds >= 0:
            raise InputError(f"--poll must be 0 (never) or more, got {self.poll_seconds}")
        if self.max_loaded is not None and self.max_loaded < 1:
            raise InputError(f"--max-loaded must be at least 1, got {self.max_loaded}")
        check_drift_alarm(self.drift_alarm)
