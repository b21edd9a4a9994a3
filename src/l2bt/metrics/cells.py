"""The counting engine of exact AUPRO: defect-free scores counted into the 2m + 1 cells of
m fixed descending edges (the distinct defect scores; see `l2bt.metrics.aupro`).

Cell 0 is "above a₁", cell 2j − 1 "equal to aⱼ", cell 2j "between aⱼ and aⱼ₊₁", cell 2m
"below a_m". Comparisons are exact (scores and edges widened to a common dtype) and counts
are integers, so any order of counting gives the same cells. Memory: one buffer of at most
BUFFER_MAX scores and O(PIECE_EDGES) temporaries per counted piece, whatever the number
of images. Figures: benchmarks/README.md.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

BUFFER_MIN, BUFFER_MAX = 1 << 20, 1 << 23  # defect-free scores counted per batch
INT32_COUNTS = 2**31 - 1  # cells are int32 while this many values or fewer were added
PIECE_EDGES = 1 << 14  # edges per piece when counting a sorted batch
EDGE_SEARCH_RATIO = 2  # search a piece's edges among its values when this many times fewer


class CellCounter:
    """Counts defect-free scores into the 2m + 1 cells of fixed descending edges.

    Scores are buffered (one preallocated array of at most BUFFER_MAX values) and counted
    a buffer at a time: the m edges are then searched once per ~4m scores instead of once
    per image, so the cost per score stays O(log) however large m gets, and memory stays
    bounded. Comparisons are exact: scores and edges are widened to a common dtype. The
    cells are int32 (half the memory) until the values added could overflow it, then
    int64.
    """

    def __init__(self, edges_desc: np.ndarray) -> None:
        self.edges = edges_desc  # (m,)
        self.cells = np.zeros(2 * edges_desc.size + 1, np.int32)  # (2m + 1,) top first
        self.total = 0
        self._capacity = int(np.clip(4 * edges_desc.size, BUFFER_MIN, BUFFER_MAX))
        self._buffer: np.ndarray | None = None
        self._filled = 0

    def add(self, values: np.ndarray) -> None:
        """Count `values` ((n,) real numbers); they are copied, never kept by reference."""
        common = np.promote_types(values.dtype, self.edges.dtype)
        if common != self.edges.dtype:
            self.flush()  # what is buffered is counted in its own, exact, precision
            self.edges, self._buffer = self.edges.astype(common), None
        if self._buffer is None:
            self._buffer = np.empty(self._capacity, common)
        if self.cells.dtype == np.int32 and self.total + values.size > INT32_COUNTS:
            self.flush()
            self.cells = self.cells.astype(np.int64)
        self.total += values.size
        for start in range(0, values.size, self._capacity):
            chunk = values[start : start + self._capacity]
            if self._filled + chunk.size > self._capacity:
                self.flush()
            self._buffer[self._filled : self._filled + chunk.size] = chunk
            self._filled += chunk.size

    def flush(self) -> None:
        """Count what is buffered."""
        if self._buffer is not None and self._filled:
            pending = self._buffer[: self._filled]  # a view
            pending.sort()  # in place: the buffer is refilled next
            count_sorted(self.cells, pending, self.edges)
        self._filled = 0

    def counts(self) -> np.ndarray:
        """(2m + 1,) every value added so far, per cell; frees the buffer."""
        self.flush()
        self._buffer = None
        return self.cells


def add_cell_counts(cells: np.ndarray, values: np.ndarray, edges_desc: np.ndarray) -> None:
    """Add to `cells` ((2m + 1,) int64, top first) the number of `values` in each cell of
    the descending edges a₁ > … > a_m, in place. `values` and `edges_desc` must share a
    dtype, so that every comparison is exact."""
    count_sorted(cells, np.sort(values), edges_desc)


def count_sorted(
    cells: np.ndarray, ordered: np.ndarray, edges_desc: np.ndarray, add: CellAdder | None = None
) -> None:
    """`add_cell_counts` for values already sorted ascending, piece by piece.

    The edges are cut into pieces of PIECE_EDGES consecutive edges; the sorted values
    falling between a piece's first edge and the next piece's are found with one
    search each. Within a piece the smaller side is searched in the larger (the edges
    among the values while EDGE_SEARCH_RATIO · edges ≤ values, else the values among
    the edges), in arrays small enough to stay in cache: about twice as fast as one
    search over the whole batch, with O(PIECE_EDGES) temporaries. Each piece's counts
    fill a contiguous slice of the cells that no other piece of the same batch touches;
    `add(start, counts)` adds them there (default: in place; the parallel counter adds
    them under a lock).
    """
    if ordered.size == 0:
        return
    add = add or _adder(cells)
    m = edges_desc.size
    ascending = edges_desc[::-1]  # (m,) a view
    if m == 0:
        add(0, np.array([ordered.size], np.int64))
        return
    firsts = ascending[::PIECE_EDGES]  # (pieces,) the lowest edge of each piece
    bounds = np.append(np.searchsorted(ordered, firsts, side="left"), ordered.size)
    add(2 * m, np.array([bounds[0]], np.int64))  # below the lowest edge
    for piece, first in enumerate(range(0, m, PIECE_EDGES)):
        values = ordered[bounds[piece] : bounds[piece + 1]]  # ≥ this piece's lowest edge
        if values.size == 0:
            continue
        edges = ascending[first : first + PIECE_EDGES]
        local = np.zeros(2 * edges.size + 1, np.int64)  # top first; [-1] stays 0
        if EDGE_SEARCH_RATIO * edges.size <= values.size:
            _count_searching_edges(local, values, edges)
        else:
            _count_searching_values(local, values, edges)
        add(2 * (m - first - edges.size), local[:-1])


CellAdder = Callable[[int, np.ndarray], None]


def _adder(cells: np.ndarray) -> CellAdder:
    def add(start: int, counts: np.ndarray) -> None:
        cells[start : start + counts.size] += counts

    return add


def _count_searching_edges(cells: np.ndarray, ordered: np.ndarray, ascending: np.ndarray) -> None:
    """Cells from the positions of the edges among the sorted values (temporaries the
    size of the edges)."""
    between = cells[::-2]  # view, bottom-up: [0] below the lowest edge, [m] above the top
    equal = cells[-2::-2]  # view, bottom-up: [j] holds the values equal to ascending[j]
    if ascending.size == 0:
        between[0] += ordered.size
        return
    below = np.searchsorted(ordered, ascending, side="left")  # (m,) values < each edge
    hit = np.flatnonzero(ordered.take(below, mode="clip") == ascending)  # (h,) edges hit
    ties = np.searchsorted(ordered, ascending[hit], side="right") - below[hit]  # (h,)
    equal[hit] += ties
    between[0] += below[0]
    between[1:-1] += np.diff(below)  # values in [edge j, edge j+1), ties at j included
    between[-1] += ordered.size - below[-1]
    between[hit + 1] -= ties  # … and taken out again: they sit in their equal-cell


def _count_searching_values(cells: np.ndarray, ordered: np.ndarray, ascending: np.ndarray) -> None:
    """Cells from the position of every sorted value among the edges, run-length counted."""
    m = ascending.size
    cell = np.searchsorted(ascending, ordered, side="left")  # (n,) edges < each value
    on_edge = ascending.take(cell, mode="clip") == ordered  # (n,) bool
    np.subtract(m, cell, out=cell)  # (n,) edges ≥ each value
    cell *= 2
    cell -= on_edge  # (n,) the cell, top first; non-increasing as the values ascend
    starts = np.flatnonzero(np.diff(cell)) + 1  # (runs - 1,) where the cell changes
    first = np.concatenate([[0], starts])  # (runs,)
    run_lengths = np.diff(np.concatenate([first, [cell.size]]))  # (runs,)
    cells[cell[first]] += run_lengths  # cells distinct: plain fancy-index add is exact
