"""Peak resident memory of a stage of work, sampled while it runs."""

from __future__ import annotations

import os
import threading
import time
from types import TracebackType

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


class PeakMemory:
    """Context manager: the largest RSS seen while inside, sampled every `interval` s.

    `ru_maxrss` cannot be reset between stages of one process, so a sampler thread
    keeps the peak of this stage alone (spikes shorter than the interval can be missed).
    """

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, current_rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self.peak_bytes = current_rss_bytes()
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, current_rss_bytes())

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2**20
