"""Exact PRO curves per defect-size bin, and P-AUROC, from counts: the pure arithmetic.

Definitions (SPEC §6). A threshold t marks every pixel with score ≥ t. FPR(t) is the
fraction of all defect-free pixels of all test images marked; PRO_b(t) the mean, over the
regions of size bin b, of the fraction of each region marked. AUPRO@L is the area under
the curve through (0, 0) and (FPR(t), PRO_b(t)) for every distinct score t, over FPR in
[0, L], divided by L, with linear interpolation at L.

With a₁ > … > a_m the distinct defect scores, PRO is constant while t moves between two
consecutive aⱼ, so the exact curve needs only (i) the defect pixels' scores and regions,
sorted once (`DefectTable`), and (ii) the number of defect-free pixels in each of the
2m + 1 cells "above a₁", "= a₁", "between a₁ and a₂", …, "below a_m" (`l2bt.metrics.cells`).
FPR at the vertices is a running sum of the cell counts, PRO(≥ aⱼ) a running sum over the
sorted defect pixels, P-AUROC the Mann–Whitney count over the same cells. Counts are
integers; the only error is float64 rounding in the running sums (at most D · 2⁻⁵³
relative for D defect pixels). Sums are numpy's own, never BLAS dot products, so figures
are bit-identical across machines and thread counts. The defect scores must be known
before defect-free pixels are counted: hence two passes (`l2bt.metrics.evaluator`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FPR_LIMITS = (0.3, 0.1, 0.05, 0.01)
AuproTable = dict[float, dict[str, float | None]]  # limit -> bin -> AUPRO
CURVE_POINTS = 400  # points kept per PRO curve, for plots
AREA_CHUNK = 1 << 18  # vertices per step when integrating: bounded temporaries


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
    def from_pixels(cls, scores: np.ndarray, regions: np.ndarray, areas: np.ndarray) -> DefectTable:
        """scores, regions: (D,) per defect pixel; areas: (R,) per region."""
        # (D,) descending scores; ties in any order (only each group's total is used):
        # numpy's vectorised quicksort, 2× faster than a stable sort
        order = np.argsort(scores)[::-1]
        sorted_scores = scores[order]
        group_ends = _run_ends(sorted_scores)
        return cls(
            regions=regions[order],
            group_ends=group_ends,
            edges=sorted_scores[group_ends],
            areas=areas,
        )

    @property
    def per_edge(self) -> np.ndarray:
        """(m,) how many defect pixels equal each edge."""
        return np.diff(self.group_ends, prepend=-1)


def fpr_vertices(cells: np.ndarray, n_normal: int, limit: float) -> np.ndarray:
    """FPR at the curve's vertices, (0, 0) first, up to the first vertex at or past
    `limit` (vertices beyond it change no AUPRO and no plotted curve)."""
    cumulative = np.cumsum(cells)  # (2m + 1,) defect-free pixels in cells 0..k
    n_cells = min(
        int(np.searchsorted(cumulative, limit * n_normal, side="left")) + 1, cumulative.size
    )
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
    between[1:] = pro_edges[: between.size - 1]
    equal[:] = pro_edges[: equal.size]


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
        widths = fpr[start + 1 : stop + 1] - fpr[start:stop]  # (chunk,)
        area += float(np.sum(widths * (pro[start + 1 : stop + 1] + pro[start:stop]))) / 2.0
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


def aupro_by_bin(
    defects: DefectTable, cells: np.ndarray, members: dict[str, np.ndarray]
) -> tuple[AuproTable, dict[str, ProCurve]]:
    """AUPRO per limit and bin, and each bin's thinned curve. One FPR array serves every
    bin; one PRO buffer is refilled per bin."""
    aupro: AuproTable = {limit: dict.fromkeys(members) for limit in FPR_LIMITS}
    curves: dict[str, ProCurve] = {}
    n_normal = int(cells.sum())
    if n_normal == 0 or defects.areas.size == 0:
        return aupro, curves
    top = max(FPR_LIMITS)
    fpr = fpr_vertices(cells, n_normal, top)
    pro = np.empty_like(fpr)
    for name, in_bin in members.items():
        if not in_bin.any():
            continue
        fill_pro_vertices(pro, pro_at_edges(defects, in_bin))
        for limit, area in zip(FPR_LIMITS, areas_under(fpr, pro, FPR_LIMITS), strict=True):
            aupro[limit][name] = area / limit
        curves[name] = thin_curve(fpr, pro, top)
    return aupro, curves
