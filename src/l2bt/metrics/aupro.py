"""Exact AUPRO per defect-size bin, and P-AUROC, from one streaming evaluator.

Definitions (SPEC §6). A threshold t marks pixels with score ≥ t. FPR(t) is the fraction
of all defect-free pixels of all test images marked; PRO_b(t) the mean, over the regions
of size bin b, of the fraction of each region marked. The PRO curve joins the points
(FPR(t), PRO(t)) for every distinct score t, from (0, 0), with straight lines; AUPRO@L
is its area over FPR ∈ [0, L], divided by L, with linear interpolation at L.

Algorithm. Let a₁ > a₂ > … > a_m be the distinct scores of defect pixels. Between two
consecutive aⱼ no defect pixel changes state, so every PRO is constant there and the
curve is horizontal: the defect-free pixels with scores in (aⱼ₊₁, aⱼ) matter only by
their count. At aⱼ itself FPR and PRO jump together (a sloped segment). So the curve is
exact given (i) the defect pixels' scores with their regions, and (ii) for each aⱼ the
number of defect-free pixels equal to it and strictly between it and the next one.

The evaluator therefore takes two passes over the maps:
1. `add_defects(map, mask)` for every image with defect pixels: regions are labelled
   once (8-connected) and their pixels' scores kept. Memory: the defect pixels.
2. `add_normal(map, mask)` for every image: defect-free pixels are sorted and counted
   into the 2m + 1 cells "above a₁, = a₁, between a₁ and a₂, …, below a_m" by searching
   the edges among them, then discarded. Memory: O(m), independent of the number of
   defect-free pixels and of images.

Size bins need the quantiles of all region areas, known after pass 1; each bin's PRO at
every aⱼ is then one cumulative sum over the defect pixels sorted once. P-AUROC follows
from the same counts (Mann–Whitney with ties as one half). Every result is exact up to
float64 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from l2bt.metrics.regions import SIZE_BINS, bin_membership, label_regions, size_quantiles

FPR_LIMITS = (0.3, 0.1, 0.05, 0.01)
CURVE_POINTS = 400  # points kept per PRO curve for plots
AREA_CHUNK = 1 << 18  # vertices per step when integrating


@dataclass(frozen=True)
class ProCurve:
    """A PRO curve up to the largest FPR limit, thinned for plotting."""

    fpr: np.ndarray
    pro: np.ndarray


@dataclass(frozen=True)
class PixelMetrics:
    """What the pixel-level maps give: AUPRO per limit and bin, P-AUROC, region facts."""

    n_regions: int
    size_quantiles_px: tuple[float, float, float] | None
    aupro: dict[float, dict[str, float | None]]
    p_auroc: float | None
    pro_curves: dict[str, ProCurve]


class PixelEvaluator:
    """Streams maps and masks through the two passes described in the module docstring."""

    def __init__(self) -> None:
        self._scores: list[np.ndarray] = []  # defect-pixel scores, per image
        self._regions: list[np.ndarray] = []  # their region index (global), per image
        self._areas: list[np.ndarray] = []  # area of every region, per image
        self._n_regions = 0
        self._edges: np.ndarray | None = None  # distinct defect scores, descending
        self._counts: np.ndarray | None = None  # defect-free pixels in the 2m + 1 cells
        self._n_normal = 0

    def add_defects(self, anomaly_map: np.ndarray, mask: np.ndarray) -> None:
        """Pass 1, for each image whose mask has defect pixels."""
        if self._edges is not None:
            raise RuntimeError("add_defects after add_normal: pass 1 must come first")
        _check_pair(anomaly_map, mask)
        labels, count = label_regions(mask)
        if count == 0:
            return
        inside = labels > 0
        self._scores.append(anomaly_map[inside])
        self._regions.append((labels[inside] - 1 + self._n_regions).astype(np.int32))
        self._areas.append(np.bincount(labels[inside], minlength=count + 1)[1:])
        self._n_regions += count

    def add_normal(self, anomaly_map: np.ndarray, mask: np.ndarray) -> None:
        """Pass 2, for every image: count its defect-free pixels."""
        _check_pair(anomaly_map, mask)
        if self._edges is None:
            self._freeze_defects()
        assert self._edges is not None and self._counts is not None
        normal = anomaly_map[~mask]
        common = np.promote_types(normal.dtype, self._edges.dtype)  # compare without rounding
        if common != self._edges.dtype:
            self._edges = self._edges.astype(common)
        self._n_normal += normal.size
        _add_cell_counts(self._counts, normal, self._edges)

    def result(self) -> PixelMetrics:
        if self._edges is None:
            self._freeze_defects()
        scores, regions, areas = self._defect_arrays()
        quantiles = size_quantiles(areas)
        members = bin_membership(areas, quantiles)
        order = np.argsort(scores, kind="stable")[::-1]  # descending
        group_ends = _group_ends(scores[order])
        p_auroc = self._p_auroc(scores)
        aupro: dict[float, dict[str, float | None]] = {limit: {} for limit in FPR_LIMITS}
        fpr = self._fpr_vertices(max(FPR_LIMITS)) if self._n_normal else np.zeros(1)
        pro = np.empty_like(fpr)  # one buffer, refilled for each bin
        curves: dict[str, ProCurve] = {}
        for name in SIZE_BINS:
            in_bin = members[name]
            if not in_bin.any() or self._n_normal == 0:
                for limit in FPR_LIMITS:
                    aupro[limit][name] = None
                continue
            weights = np.where(in_bin, 1.0 / (areas * in_bin.sum()), 0.0)[regions[order]]
            # weights: float64, so cumulative sums stay exact to rounding
            pro_at_edges = np.cumsum(weights)[group_ends]  # PRO(≥ aⱼ), j = 1..m
            del weights
            self._fill_pro_vertices(pro, pro_at_edges)
            for limit in FPR_LIMITS:
                aupro[limit][name] = area_under(fpr, pro, limit) / limit
            curves[name] = _thin(fpr, pro, max(FPR_LIMITS))
        return PixelMetrics(
            n_regions=self._n_regions,
            size_quantiles_px=quantiles,
            aupro=aupro,
            p_auroc=p_auroc,
            pro_curves=curves,
        )

    # ---- internals ------------------------------------------------------------------------

    def _defect_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self._scores:
            return np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(0, np.int64)
        return (np.concatenate(self._scores), np.concatenate(self._regions),
                np.concatenate(self._areas))

    def _freeze_defects(self) -> None:
        """End of pass 1: fix the cell edges (distinct defect scores, descending)."""
        scores = self._defect_arrays()[0]
        self._edges = np.unique(scores)[::-1].copy()
        self._counts = np.zeros(2 * self._edges.size + 1, np.int64)

    def _fpr_vertices(self, limit: float) -> np.ndarray:
        """FPR at the curve's vertices, (0, 0) first, up to the first one at or past
        `limit`: vertices beyond it change no AUPRO and no plotted curve.

        Vertex k + 1 ends cell k: cell 2j (strictly between edges) is a horizontal
        segment, cell 2j + 1 (equal to edge j) a sloped or vertical one.
        """
        assert self._counts is not None
        cumulative = np.cumsum(self._counts)
        n_cells = min(int(np.searchsorted(cumulative, limit * self._n_normal, side="left")) + 1,
                      cumulative.size)
        fpr = np.empty(n_cells + 1)
        fpr[0] = 0.0
        np.divide(cumulative[:n_cells], self._n_normal, out=fpr[1:])
        return fpr

    @staticmethod
    def _fill_pro_vertices(pro: np.ndarray, pro_at_edges: np.ndarray) -> None:
        """PRO at the vertices of `_fpr_vertices`, in place: a between-cell ends at the
        level of the edge above it, an equal-cell at its own edge's level."""
        pro[0] = 0.0
        between, equal = pro[1::2], pro[2::2]  # vertices ending cells 0, 2, … and 1, 3, …
        between[0] = 0.0
        between[1:] = pro_at_edges[:between.size - 1]
        equal[:] = pro_at_edges[:equal.size]


    def _p_auroc(self, scores: np.ndarray) -> float | None:
        """Mann–Whitney over pixels from the cell counts; ties count one half."""
        n_defect = scores.size
        if n_defect == 0 or self._n_normal == 0:
            return None
        assert self._counts is not None and self._edges is not None
        per_edge = _count_equal(scores, self._edges)  # defect pixels equal to each edge
        above = np.concatenate([[0], np.cumsum(per_edge)])  # defect pixels ≥ a_j, j = 0..m
        between, equal = self._counts[0::2], self._counts[1::2]
        wins = (between * above).sum() + (equal * (above[:-1] + 0.5 * per_edge)).sum()
        return float(wins / (n_defect * self._n_normal))


def area_under(fpr: np.ndarray, pro: np.ndarray, limit: float) -> float:
    """Area under the piecewise-linear curve through (fpr, pro) over [0, limit].

    `fpr` is non-decreasing from 0; the curve is cut at `limit` by linear interpolation
    (vertical steps, where fpr repeats, take the value reached last before the cut).
    """
    end = int(np.searchsorted(fpr, limit, side="right"))  # vertices with fpr ≤ limit
    x, y = fpr[:end], pro[:end]
    area = 0.0
    for start in range(0, max(end - 1, 0), AREA_CHUNK):  # bounded temporaries
        stop = min(start + AREA_CHUNK, end - 1)
        widths = x[start + 1:stop + 1] - x[start:stop]
        area += float(np.dot(widths, y[start + 1:stop + 1] + y[start:stop])) / 2.0
    if end < fpr.size and x[-1] < limit:
        x0, y0, x1, y1 = x[-1], y[-1], fpr[end], pro[end]
        y_cut = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        area += (limit - x0) * (y0 + y_cut) / 2.0
    return area


def _check_pair(anomaly_map: np.ndarray, mask: np.ndarray) -> None:
    if anomaly_map.shape != mask.shape or anomaly_map.ndim != 2:
        raise ValueError(f"map {anomaly_map.shape} and mask {mask.shape} must be equal 2-D shapes")


def _add_cell_counts(cells: np.ndarray, values: np.ndarray, edges_desc: np.ndarray) -> None:
    """Add to `cells` (2m + 1, top first) the counts of `values` per cell of the
    descending edges a₁ > … > a_m, in place.

    The values are sorted (fast, vectorised) and the m edges searched among them, so the
    cost is a sort plus O(m log n), not n binary searches into the edges.
    """
    ordered = np.sort(values)
    ascending = edges_desc[::-1]
    below = np.searchsorted(ordered, ascending, side="left")  # values < edge
    at_or_below = np.searchsorted(ordered, ascending, side="right")  # values ≤ edge
    cells[-2::-2] += at_or_below - below  # equal-cells 2m-1, …, 3, 1: edges bottom-up
    between = cells[::-2]  # a view: between-cells 2m, …, 2, 0 (below the lowest edge first)
    if edges_desc.size == 0:
        between[0] += ordered.size
        return
    between[0] += below[0]
    between[1:-1] += below[1:] - at_or_below[:-1]
    between[-1] += ordered.size - at_or_below[-1]


def _count_equal(values: np.ndarray, edges_desc: np.ndarray) -> np.ndarray:
    """How many `values` equal each edge (every value is an edge)."""
    index = edges_desc.size - 1 - np.searchsorted(edges_desc[::-1], values, side="left")
    return np.bincount(index, minlength=edges_desc.size)


def _group_ends(sorted_desc: np.ndarray) -> np.ndarray:
    """Index of the last element of each run of equal values in a sorted array."""
    if sorted_desc.size == 0:
        return np.zeros(0, np.int64)
    changes = np.flatnonzero(sorted_desc[1:] != sorted_desc[:-1])
    return np.concatenate([changes, [sorted_desc.size - 1]])


def _thin(fpr: np.ndarray, pro: np.ndarray, limit: float) -> ProCurve:
    """The curve up to `limit`, resampled at CURVE_POINTS FPR values for plotting."""
    grid = np.linspace(0.0, limit, CURVE_POINTS)
    return ProCurve(fpr=grid, pro=np.interp(grid, fpr, pro))  # fpr sorted; pro non-decreasing
