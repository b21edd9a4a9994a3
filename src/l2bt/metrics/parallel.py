"""Counting defect-free scores into cells on several cores, exactly.

`ParallelCellCounter` has `CellCounter`'s interface (`add`, `counts`, `total`). The
caller's thread copies scores into a buffer; a full buffer goes to a worker thread,
which sorts it in place and counts it piece by piece (`l2bt.metrics.aupro.count_sorted`)
while the caller fills the next buffer. numpy releases the GIL while it sorts and
searches, so the workers run on separate cores. Each piece's counts are added to the
one shared (2m + 1,) array under a lock (int32 until the values could overflow it, then
int64, as `CellCounter`): integer additions commute, so the counts
are bit-identical to the sequential `CellCounter`'s, whatever the batches, the number of
workers or the order in which they finish.

Memory: workers + 1 buffers of `CellCounter`'s capacity (clip(4m, BUFFER_MIN,
BUFFER_MAX) scores; at most 32 MB each as float32): one being filled, one per worker
being counted; the caller waits for a free buffer, so no more are ever made. The cells
are shared, not copied per worker; per piece a worker holds O(PIECE_EDGES) temporaries.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from queue import SimpleQueue

import numpy as np

from l2bt.metrics import aupro

MAX_WORKERS = 4


class ParallelCellCounter:
    """Counts values into the 2m + 1 cells of fixed descending edges with `workers`
    threads; see the module docstring."""

    def __init__(self, edges_desc: np.ndarray, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.edges = edges_desc  # (m,)
        self.cells = np.zeros(2 * edges_desc.size + 1, np.int32)  # (2m + 1,) top first
        self.total = 0
        self._workers = workers
        self._capacity = int(np.clip(4 * edges_desc.size, aupro.BUFFER_MIN, aupro.BUFFER_MAX))
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future[None]] = []
        self._free: SimpleQueue[np.ndarray] = SimpleQueue()
        self._made = 0  # buffers allocated, at most workers + 1
        self._buffer: np.ndarray | None = None  # the one being filled
        self._filled = 0

    def add(self, values: np.ndarray) -> None:
        """Count `values` ((n,) real numbers); they are copied, never kept by reference."""
        common = np.promote_types(values.dtype, self.edges.dtype)
        if common != self.edges.dtype:
            self._drain()  # what is buffered is counted in its own, exact, precision
            self.edges = self.edges.astype(common)
            self._free, self._made, self._buffer = SimpleQueue(), 0, None
        if self.cells.dtype == np.int32 and self.total + values.size > aupro.INT32_COUNTS:
            self._drain()  # no worker adds while the cells are widened
            self.cells = self.cells.astype(np.int64)
        self.total += values.size
        for start in range(0, values.size, self._capacity):
            chunk = values[start:start + self._capacity]
            if self._buffer is not None and self._filled + chunk.size > self._capacity:
                self._submit()
            if self._buffer is None:
                self._buffer, self._filled = self._take_buffer(), 0
            self._buffer[self._filled:self._filled + chunk.size] = chunk
            self._filled += chunk.size

    def counts(self) -> np.ndarray:
        """(2m + 1,) every value added so far, per cell; stops the workers, frees buffers."""
        self._drain()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self._free, self._made = SimpleQueue(), 0
        return self.cells

    def _take_buffer(self) -> np.ndarray:
        """A free buffer: a new one while fewer than workers + 1 exist, else the next one
        a worker hands back (re-raising that worker's error, if any)."""
        if self._made <= self._workers:
            self._made += 1
            return np.empty(self._capacity, self.edges.dtype)
        while self._free.empty():
            self._pending[0].result()  # wait for the oldest batch (raises its error)
            self._reap()
        return self._free.get()

    def _submit(self) -> None:
        """Hand the buffer being filled to a worker."""
        assert self._buffer is not None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="l2bt-count")
        self._reap()
        self._pending.append(self._pool.submit(self._count, self._buffer, self._filled))
        self._buffer, self._filled = None, 0

    def _reap(self) -> None:
        """Forget finished batches, re-raising the first error among them."""
        for future in self._pending:
            if future.done():
                future.result()
        self._pending = [f for f in self._pending if not f.done()]

    def _count(self, buffer: np.ndarray, filled: int) -> None:
        """Worker: sort the batch in place, add its counts, give the buffer back."""
        try:
            batch = buffer[:filled]  # a view
            batch.sort()
            aupro.count_sorted(self.cells, batch, self.edges, add=self._add_locked)
        finally:
            self._free.put(buffer)

    def _add_locked(self, start: int, counts: np.ndarray) -> None:
        with self._lock:
            self.cells[start:start + counts.size] += counts

    def _drain(self) -> None:
        """Count what is buffered and wait for every worker (re-raising their errors)."""
        if self._buffer is not None and self._filled:
            self._submit()
        self._buffer, self._filled = None, 0
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()


def default_workers() -> int:
    """Counting threads for this machine: its usable cores, at most MAX_WORKERS (each
    worker adds a buffer, so memory, not cores, sets the cap)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))
