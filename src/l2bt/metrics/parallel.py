"""Counting scores into cells on several cores, exactly.

`ParallelCellCounter` has `CellCounter`'s interface (`add`, `counts`, `total`). The
caller's thread copies scores into a buffer; a full buffer goes to one of `workers` − 1
background threads when another buffer is free to fill next, else the caller counts it
itself. Counting a batch is sorting it in place and counting it piece by piece
(`l2bt.metrics.cells.count_sorted`); numpy releases the GIL meanwhile, so `workers`
cores stay busy. Each piece's counts are added to the one shared (2m + 1,) array under
a lock: integer additions commute, so the counts are bit-identical to the sequential
`CellCounter`'s, whatever the batches, workers or order of completion.

Memory: `workers` buffers of clip(BATCH_PER_EDGE · m, BUFFER_MIN, BATCH_SCALE ·
BUFFER_MAX) scores (at most 32 M scores each), the shared cells, and O(PIECE_EDGES)
temporaries per piece. Batches grow with the number m of edges because a batch costs
about min(values, edges) binary searches. Timings per value: benchmarks/README.md.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from queue import SimpleQueue

import numpy as np

from l2bt.metrics import cells
from l2bt.utils.host import usable_cores

MAX_WORKERS = 4
BATCH_PER_EDGE = 8  # scores per batch, per distinct defect score (bounded as above)
BATCH_SCALE = 4  # batches up to this many times CellCounter's largest


class ParallelCellCounter:
    """Counts values into the 2m + 1 cells of fixed descending edges on `workers` cores
    (the caller's thread and workers − 1 others); see the module docstring."""

    def __init__(self, edges_desc: np.ndarray, workers: int) -> None:
        if workers < 2:
            raise ValueError(f"a parallel counter needs at least 2 workers, not {workers}")
        self.edges = edges_desc  # (m,)
        self.cells = np.zeros(2 * edges_desc.size + 1, np.int32)  # (2m + 1,) top first
        self.total = 0
        self._workers = workers
        self._capacity = int(
            np.clip(
                BATCH_PER_EDGE * edges_desc.size, cells.BUFFER_MIN, BATCH_SCALE * cells.BUFFER_MAX
            )
        )
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future[None]] = []
        self._free: SimpleQueue[np.ndarray] = SimpleQueue()
        self._made = 0  # buffers allocated, at most `workers`
        self._buffer: np.ndarray | None = None  # the one being filled
        self._filled = 0

    def add(self, values: np.ndarray) -> None:
        """Count `values` ((n,) real numbers); they are copied, never kept by reference."""
        common = np.promote_types(values.dtype, self.edges.dtype)
        if common != self.edges.dtype:
            self._drain()  # what is buffered is counted in its own, exact, precision
            self.edges = self.edges.astype(common)
            self._free, self._made, self._buffer = SimpleQueue(), 0, None
        if self.cells.dtype == np.int32 and self.total + values.size > cells.INT32_COUNTS:
            self._drain()  # no thread adds while the cells are widened
            self.cells = self.cells.astype(np.int64)
        self.total += values.size
        for start in range(0, values.size, self._capacity):
            chunk = values[start : start + self._capacity]
            if self._buffer is not None and self._filled + chunk.size > self._capacity:
                self._hand_over()
            if self._buffer is None:
                self._buffer = self._free.get() if not self._free.empty() else self._new_buffer()
                self._filled = 0
            self._buffer[self._filled : self._filled + chunk.size] = chunk
            self._filled += chunk.size

    def counts(self) -> np.ndarray:
        """(2m + 1,) every value added so far, per cell; stops the threads, frees buffers."""
        self._drain()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self._free, self._made = SimpleQueue(), 0
        return self.cells

    def _new_buffer(self) -> np.ndarray:
        self._made += 1
        return np.empty(self._capacity, self.edges.dtype)

    def _hand_over(self) -> None:
        """The full buffer to a background thread if another buffer is free to fill next;
        else count it here and refill it."""
        assert self._buffer is not None
        self._reap()
        if not self._free.empty():
            following = self._free.get()
        elif self._made < self._workers:
            following = self._new_buffer()
        else:
            self._count(self._buffer, self._filled, give_back=False)
            self._filled = 0
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._workers - 1, thread_name_prefix="l2bt-count")
        self._pending.append(self._pool.submit(self._count, self._buffer, self._filled))
        self._buffer, self._filled = following, 0

    def _count(self, buffer: np.ndarray, filled: int, give_back: bool = True) -> None:
        """Sort the batch in place, add its counts; a background thread then gives the
        buffer back to be filled again."""
        try:
            batch = buffer[:filled]  # a view
            batch.sort()
            cells.count_sorted(self.cells, batch, self.edges, add=self._add_locked)
        finally:
            if give_back:
                self._free.put(buffer)

    def _add_locked(self, start: int, counts: np.ndarray) -> None:
        with self._lock:
            self.cells[start : start + counts.size] += counts

    def _reap(self) -> None:
        """Forget finished batches, re-raising the first error among them."""
        for future in self._pending:
            if future.done():
                future.result()
        self._pending = [f for f in self._pending if not f.done()]

    def _drain(self) -> None:
        """Count what is buffered (here) and wait for every thread (re-raising errors)."""
        if self._buffer is not None:
            self._count(self._buffer, self._filled)  # and back among the free buffers
        self._buffer, self._filled = None, 0
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()


def default_workers() -> int:
    """Counting threads for this machine: its usable cores, at most MAX_WORKERS (each
    worker adds a buffer, so memory, not cores, sets the cap)."""
    return max(1, min(usable_cores(), MAX_WORKERS))
