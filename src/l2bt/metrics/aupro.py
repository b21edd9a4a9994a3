"""Exact PRO curves per defect-size bin, and P-AUROC, from counts — the pure arithmetic.

Definitions (SPEC §6). A threshold t marks every pixel with score ≥ t (one convention,
used everywhere). FPR(t) is the fraction of all defect-free pixels of all test images
marked; PRO_b(t) the mean, over the regions of size bin b, of the fraction of each
region marked. The PRO curve joins (0, 0) and the points (FPR(t), PRO_b(t)) for every
distinct score t, from the highest down, with straight lines; AUPRO@L is its area over
FPR ∈ [0, L], divided by L, with linear interpolation at L.

Where the curve bends. Let a₁ > a₂ > … > a_m be the distinct scores of defect pixels.
While t moves between two consecutive aⱼ no defect pixel changes state, so every PRO is
constant and the curve is horizontal: defect-free pixels with scores strictly between
aⱼ₊₁ and aⱼ matter only by their number. At t = aⱼ the defect pixels equal to aⱼ and
the defect-free pixels equal to aⱼ switch together: one straight (sloped) segment.
Hence the exact curve needs only

  (i)  the defect pixels' scores and regions, sorted once (`DefectTable`), and
  (ii) the number of defect-free pixels in each of the 2m + 1 cells
       "above a₁", "= a₁", "between a₁ and a₂", "= a₂", …, "below a_m" (`CellCounter`).

Cell k ends at curve vertex k + 1, vertex 0 being (0, 0): an even cell (strictly between
two edges) is a horizontal segment at the PRO of the edge above it, an odd cell (equal
to edge j) a segment rising to PRO(≥ aⱼ). FPR at the vertices is the running sum of the
cell counts; PRO(≥ aⱼ) of a bin is a running sum over the sorted defect pixels, each
weighing 1 / (its region's area × regions in the bin); P-AUROC is the Mann–Whitney
count over the same cells. Counts are integers; the only error is float64 rounding in
the running sums (relative, at most D · 2⁻⁵³ for D defect pixels: 1e-9 for D = 10 M in
the worst case, typically √D times smaller), no thresholds are sampled or quantised.
Sums are numpy's own (pairwise, single-threaded), never BLAS dot products, whose
summation order changes with the thread count: the figures are bit-identical on every
machine and in every process (a Ray worker has one BLAS thread, a driver several).

Why the defect scores must be known before the defect-free pixels are counted (two
passes, see `l2bt.metrics.evaluator`): in a single pass a defect score seen later may
fall anywhere between defect-free scores seen earlier, so the counts of (ii) would need
every defect-free score kept — the bulk of the data, which this design never keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

FPR_LIMITS = (0.3, 0.1, 0.05, 0.01)
CURVE_POINTS = 400  # points kept per PRO curve, for plots
AREA_CHUNK = 1 << 18  # vertices per step when integrating: bounded temporaries
BUFFER_MIN, BUFFER_MAX = 1 << 20, 1 << 23  # defect-free scores counted per batch
INT32_COUNTS = 2**31 - 1  # cells are int32 while this many values or fewer were added
PIECE_EDGES = 1 << 14  # edges per piece when counting a sorted batch
EDGE_SEARCH_RATIO = 2  # search a piece's edges among its values when this many times fewer


@dataclass(frozen=True)
class ProCurve:
    """A PRO curve on FPR ∈ [0, max limit], resampled at CURVE_POINTS points for plots."""

    fpr: np.ndarray
    pro: np.ndarray


@dataclass(frozen=True)
class DefectTable:
    """Every defect pixel of a test set, by descending score, grouped by distinct score."""

    regions: np.ndarray  # (D,) int32: the region of each defect pixel, scores descending
    group_ends: np.ndarray  # (m,) int64: index of the last pixel of each distinct score
    edges: np.ndarray  # (m,) the distinct defect scores a₁ > … > a_m
    areas: np.ndarray  # (R,) int64: pixels per region

    @classmethod
    def from_pixels(cls, scores: np.ndarray, regions: np.ndarray, areas: np.ndarray
                    ) -> DefectTable:
        """scores, regions: (D,) per defect pixel; areas: (R,) per region."""
        # (D,) descending scores; ties in any order (only each group's total is used):
        # numpy's vectorised quicksort, 2× faster than a stable sort
        order = np.argsort(scores)[::-1]
        sorted_scores = scores[order]
        group_ends = _run_ends(sorted_scores)
        return cls(regions=regions[order], group_ends=group_ends,
                   edges=sorted_scores[group_ends], areas=areas)

    @property
    def per_edge(self) -> np.ndarray:
        """(m,) how many defect pixels equal each edge."""
        return np.diff(self.group_ends, prepend=-1)


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
            chunk = values[start:start + self._capacity]
            if self._filled + chunk.size > self._capacity:
                self.flush()
            self._buffer[self._filled:self._filled + chunk.size] = chunk
            self._filled += chunk.size

    def flush(self) -> None:
        """Count what is buffered."""
        if self._buffer is not None and self._filled:
            pending = self._buffer[:self._filled]  # a view
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


def count_sorted(cells: np.ndarray, ordered: np.ndarray, edges_desc: np.ndarray,
                 add: CellAdder | None = None) -> None:
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
        values = ordered[bounds[piece]:bounds[piece + 1]]  # ≥ this piece's lowest edge
        if values.size == 0:
            continue
        edges = ascending[first:first + PIECE_EDGES]
        local = np.zeros(2 * edges.size + 1, np.int64)  # top first; [-1] stays 0
        if EDGE_SEARCH_RATIO * edges.size <= values.size:
            _count_searching_edges(local, values, edges)
        else:
            _count_searching_values(local, values, edges)
        add(2 * (m - first - edges.size), local[:-1])


CellAdder = Callable[[int, np.ndarray], None]


def _adder(cells: np.ndarray) -> CellAdder:
    def add(start: int, counts: np.ndarray) -> None:
        cells[start:start + counts.size] += counts
    return add


def _count_searching_edges(cells: np.ndarray, ordered: np.ndarray, ascending: np.ndarray
                           ) -> None:
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


def _count_searching_values(cells: np.ndarray, ordered: np.ndarray, ascending: np.ndarray
                            ) -> None:
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


def fpr_vertices(cells: np.ndarray, n_normal: int, limit: float) -> np.ndarray:
    """FPR at the curve's vertices, (0, 0) first, up to the first vertex at or past
    `limit` (vertices beyond it change no AUPRO and no plotted curve)."""
    cumulative = np.cumsum(cells)  # (2m + 1,) defect-free pixels in cells 0..k
    n_cells = min(int(np.searchsorted(cumulative, limit * n_normal, side="left")) + 1,
                  cumulative.size)
    fpr = np.empty(n_cells + 1)  # (n_cells + 1,) float64
    fpr[0] = 0.0
    np.divide(cumulative[:n_cells], n_normal, out=fpr[1:])
    return fpr


def pro_at_edges(defects: DefectTable, in_bin: np.ndarray) -> np.ndarray:
    """(m,) PRO(≥ aⱼ) of the bin given by `in_bin` ((R,) bool over regions)."""
    share = np.where(in_bin, 1.0 / (defects.areas * in_bin.sum()), 0.0)  # (R,) per pixel
    running = share[defects.regions]  # (D,) float64, pixels by descending score
    np.cumsum(running, out=running)
    return running[defects.group_ends]


def fill_pro_vertices(pro: np.ndarray, pro_edges: np.ndarray) -> None:
    """PRO at the vertices of `fpr_vertices`, in place: vertex 2j + 1 ends between-cell
    2j at the level of the edge above (0 for j = 0), vertex 2j + 2 ends equal-cell
    2j + 1 at PRO(≥ a_{j+1})."""
    pro[0] = 0.0
    between, equal = pro[1::2], pro[2::2]  # views: vertices 1, 3, … and 2, 4, …
    between[0] = 0.0
    between[1:] = pro_edges[:between.size - 1]
    equal[:] = pro_edges[:equal.size]


def area_under(fpr: np.ndarray, pro: np.ndarray, limit: float) -> float:
    """Area under the piecewise-linear curve through (fpr, pro) over [0, limit].

    `fpr` is non-decreasing from 0; the curve is cut at `limit` by linear interpolation
    (vertical steps, where fpr repeats, take the value reached last before the cut).
    """
    return areas_under(fpr, pro, [limit])[0]


def areas_under(fpr: np.ndarray, pro: np.ndarray, limits: Sequence[float]) -> list[float]:
    """`area_under` for several limits in one pass over the vertices."""
    areas = [0.0] * len(limits)
    running, reached = 0.0, 0  # area from vertex 0 to vertex `reached`
    for i in np.argsort(limits):  # increasing limits: one sweep
        limit = limits[i]
        end = int(np.searchsorted(fpr, limit, side="right"))  # vertices with fpr ≤ limit
        running += _trapezoids(fpr, pro, reached, end - 1)
        reached = end - 1
        areas[i] = running + _cut_at(fpr, pro, end, limit)
    return areas


def _trapezoids(fpr: np.ndarray, pro: np.ndarray, first: int, last: int) -> float:
    """Area of the segments from vertex `first` to vertex `last`, in bounded chunks."""
    area = 0.0
    for start in range(first, last, AREA_CHUNK):
        stop = min(start + AREA_CHUNK, last)
        widths = fpr[start + 1:stop + 1] - fpr[start:stop]  # (chunk,)
        area += float(np.sum(widths * (pro[start + 1:stop + 1] + pro[start:stop]))) / 2.0
    return area


def _cut_at(fpr: np.ndarray, pro: np.ndarray, end: int, limit: float) -> float:
    """Area from the last vertex at or before `limit` (end - 1) to `limit` itself."""
    x0, y0 = fpr[end - 1], pro[end - 1]
    if end == fpr.size or x0 >= limit:
        return 0.0
    x1, y1 = fpr[end], pro[end]
    y_cut = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
    return float((limit - x0) * (y0 + y_cut) / 2.0)


def pixel_auroc(cells: np.ndarray, per_edge: np.ndarray) -> float | None:
    """P-AUROC: the Mann–Whitney statistic over (defect, defect-free) pixel pairs, ties
    counting one half, from the cell counts; None without pixels of either kind."""
    n_defect, n_normal = int(per_edge.sum()), int(cells.sum())
    if n_defect == 0 or n_normal == 0:
        return None
    above = np.concatenate([[0], np.cumsum(per_edge)]).astype(np.float64)  # (m+1,) ≥ aⱼ
    between, equal = cells[0::2].astype(np.float64), cells[1::2].astype(np.float64)
    wins = np.sum(between * above) + np.sum(equal * (above[:-1] + 0.5 * per_edge))
    return float(wins / n_defect / n_normal)


def thin_curve(fpr: np.ndarray, pro: np.ndarray, limit: float) -> ProCurve:
    """The curve on [0, limit], resampled at CURVE_POINTS FPR values for plotting."""
    grid = np.linspace(0.0, limit, CURVE_POINTS)
    return ProCurve(fpr=grid, pro=np.interp(grid, fpr, pro))


def _run_ends(sorted_values: np.ndarray) -> np.ndarray:
    """Index of the last element of each run of equal values in a sorted array."""
    if sorted_values.size == 0:
        return np.zeros(0, np.int64)
    changes = np.flatnonzero(sorted_values[1:] != sorted_values[:-1])
    return np.concatenate([changes, [sorted_values.size - 1]]).astype(np.int64)
