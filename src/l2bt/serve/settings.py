"""The service's limits, checked once when the app is made."""

from __future__ import annotations

from dataclasses import dataclass

from l2bt.errors import InputError

MEGABYTE = 1024 * 1024


@dataclass(frozen=True)
class ServeSettings:
    """What `l2bt serve` is allowed to hold and do at once.

    `batch_size`: most images of one size predicted together. `queue_size`: most requests
    admitted at once (reading their body, decoding, waiting for the worker or being
    predicted); one more is answered 503. `max_pixels`: largest image (width × height),
    read from the file's header before any pixel is decoded. `max_body_bytes`: largest
    request body, counted while it arrives.
    """

    batch_size: int = 4
    queue_size: int = 16
    max_pixels: int = 50_000_000
    max_body_bytes: int = 200 * MEGABYTE

    def __post_init__(self) -> None:
        flags = {"batch_size": "--batch-size", "queue_size": "--queue-size",
                 "max_pixels": "--max-pixels", "max_body_bytes": "--max-body-mb"}
        for name, flag in flags.items():
            value = getattr(self, name)
            if value < 1:
                raise InputError(f"{flag} must be positive, got {value}")
