"""AUPIMO (Bertoldo et al.), exact at every distinct score.

The shared FPR(t) is the mean, over the normal images, of the fraction of each image's
pixels with score ≥ t; TPR_i(t) the fraction of defective image i's mask marked. The PIMO
curve joins (FPR(t), TPR_i(t)) for every distinct t with straight lines on a log FPR axis;
AUPIMO_i = (1 / ln(U / L)) ∫ TPR_i d(ln FPR) over [L, U] = [1e-5, 1e-4], clipped to [0, 1].
Unlike the public reference (300,000 sampled thresholds), nothing is sampled and the
bounds are met exactly. Only the normal images' top scores matter (`NormalPool`: every
normal score above a floor at which the kept scores already make a shared FPR of U),
merged in doubling rounds so each score is merged O(log) times. Memory: a few times
U · (normal pixels) values, whatever the number of images. Derivation: docs/design.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from l2bt.metrics.aupro import DefectTable

FPR_BOUNDS = (1e-5, 1e-4)
POOL_MARGIN = 1e-9  # relative: the floor keeps a little more than U, against rounding
POOL_MIN_PRUNE = 1 << 10  # values kept before the pool is first pruned (the first image
# alone reaches the target, so its floor is known at once and later images skip partitions)
PIXELS_PER_STEP = 1 << 21  # defect pixels integrated at a time: bounded temporaries


@dataclass(frozen=True)
class Aupimo:
    """AUPIMO per defective image (by key) and their mean; None / {} without a normal
    image or a defective one."""

    mean: float | None
    per_image: dict[str, float]


class NormalPool:
    """The top of the normal images' scores: every score ≥ `floor`, counted per image
    area, with floor as high as keeps a shared FPR ≥ U (see the module docstring)."""

    def __init__(self, n_images: int, upper_bound: float = FPR_BOUNDS[1]) -> None:
        self.n_images = n_images  # J, known before the first image
        self.added = 0
        self.floor = -math.inf
        # Σ over kept pixels of 1 / (their image's area) that makes a shared FPR of U
        self._target = upper_bound * n_images * (1 + POOL_MARGIN)
        self._groups: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # area -> values, counts
        self._fresh: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}  # not merged yet
        self._fresh_size = 0
        self._size_at_prune = POOL_MIN_PRUNE
        self._above: dict[int, np.ndarray] = {}  # area -> (v + 1,) kept pixels ≥ values[i]

    def add(self, values: np.ndarray) -> None:
        """One normal image's scores ((P,), any real dtype)."""
        self.added += 1
        self._above = {}
        area = values.size
        if area == 0:
            return
        candidates = values if self.floor == -math.inf else _at_least(values, self.floor)
        enough = math.ceil(self._target * area)  # this image's top pixels alone reach U
        if enough < candidates.size:
            kth_largest = np.partition(candidates, candidates.size - enough)[
                candidates.size - enough
            ]
            candidates = candidates[candidates >= kth_largest]  # ties at it kept
        kept, counts = np.unique(candidates.astype(np.float64), return_counts=True)
        self._fresh.setdefault(area, []).append((kept, counts))
        self._fresh_size += kept.size
        if self._fresh_size > max(self._merged_size(), POOL_MIN_PRUNE):
            self._merge_fresh()
            if self._merged_size() > 2 * self._size_at_prune:
                self._prune()

    def _merged_size(self) -> int:
        return sum(v.size for v, _ in self._groups.values())

    def _merge_fresh(self) -> None:
        """Every image's top not merged yet into its area's (sorted values, counts)."""
        for area, tops in self._fresh.items():
            parts = [self._groups[area], *tops] if area in self._groups else tops
            self._groups[area] = _merge_counted(parts)
        self._fresh, self._fresh_size, self._above = {}, 0, {}

    def _prune(self) -> None:
        """Raise the floor to the highest score whose kept scores reach the target."""
        self._merge_fresh()
        values = np.concatenate([v for v, _ in self._groups.values()])  # (k,)
        weights = np.concatenate([c / area for area, (_, c) in self._groups.items()])  # (k,)
        order = np.argsort(-values, kind="stable")  # (k,) descending
        reached = np.flatnonzero(np.cumsum(weights[order]) >= self._target)
        if reached.size:
            self.floor = max(self.floor, float(values[order[reached[0]]]))
            for area, (v, c) in list(self._groups.items()):
                keep = v >= self.floor
                self._groups[area] = (v[keep], c[keep])
        self._size_at_prune = max(POOL_MIN_PRUNE, self._merged_size())

    def shared_fpr(self, thresholds: np.ndarray, strict: bool) -> np.ndarray:
        """(k,) mean per-image FPR at each threshold: pixels > t (strict) or ≥ t. Exact
        where it is below U; elsewhere at least U."""
        if self._fresh:
            self._merge_fresh()
        total = np.zeros(thresholds.size, np.float64)
        for area in sorted(self._groups):  # a fixed order: the same sums every run
            values, counts = self._groups[area]
            if area not in self._above:
                self._above[area] = np.append(np.cumsum(counts[::-1])[::-1], 0)
            above = self._above[area]
            first = np.searchsorted(values, thresholds, side="right" if strict else "left")
            total += above[first] / area
        return total / self.n_images


def _at_least(values: np.ndarray, floor: float) -> np.ndarray:
    """values[values >= floor], a slice at a time: no temporary the size of the image."""
    step = 1 << 18
    return np.concatenate(
        [
            part[part >= floor]
            for part in (values[i : i + step] for i in range(0, max(values.size, 1), step))
        ]
    )


def _merge_counted(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Several (sorted unique values, counts) as one."""
    values, inverse = np.unique(np.concatenate([v for v, _ in parts]), return_inverse=True)
    counts = np.bincount(
        inverse, weights=np.concatenate([c for _, c in parts]), minlength=values.size
    )
    return values, counts.astype(np.int64)


def aupimo_scores(
    defects: DefectTable,
    region_image: np.ndarray,
    n_defective: int,
    pool: NormalPool,
    bounds: tuple[float, float] = FPR_BOUNDS,
) -> np.ndarray:
    """(n_defective,) AUPIMO of each defective image; `region_image` ((R,) int, ascending)
    gives each region's image 0..n_defective − 1. NaN for all when J = 0."""
    lower, upper = bounds
    if pool.n_images == 0 or n_defective == 0:
        return np.full(n_defective, np.nan)
    pixels_per_image = np.bincount(
        region_image, weights=defects.areas, minlength=n_defective
    )  # (n,) float64, exact integers
    n_edges = _edges_below(defects.edges, pool, upper)
    n_pixels = int(defects.group_ends[n_edges - 1]) + 1 if n_edges else 0
    area = np.zeros(n_defective)
    last_fpr = np.zeros(n_defective)  # FPR(≥ u) at each image's last bend so far
    last_tpr = np.zeros(n_defective)
    region_first = np.searchsorted(region_image, np.arange(n_defective + 1))  # (n + 1,)
    for start in range(0, n_defective, _images_per_step(pixels_per_image, n_defective)):
        stop = min(start + _images_per_step(pixels_per_image, n_defective), n_defective)
        bends = _bends(
            defects,
            region_image,
            region_first[start],
            region_first[stop],
            n_pixels,
            pixels_per_image,
            pool,
        )
        _integrate_bends(bends, area, last_fpr, last_tpr, lower, upper)
    # After the last bend: flat at its TPR up to U (and beyond).
    area += _log_segment_area(
        last_fpr, last_tpr, np.full(n_defective, np.inf), last_tpr, lower, upper
    )
    return np.clip(area / math.log(upper / lower), 0.0, 1.0)


def _edges_below(edges_desc: np.ndarray, pool: NormalPool, upper: float) -> int:
    """How many of the descending edges u have FPR(> u) < U: only they bend a curve
    inside the range, and they are a prefix (FPR grows as u falls). Bisection: O(log m)
    look-ups, no array over the edges."""
    low, high = 0, edges_desc.size
    while low < high:
        middle = (low + high) // 2
        if pool.shared_fpr(edges_desc[middle : middle + 1], strict=True)[0] < upper:
            low = middle + 1
        else:
            high = middle
    return low


def _images_per_step(pixels_per_image: np.ndarray, n_images: int) -> int:
    """Images per step so that a step holds about PIXELS_PER_STEP defect pixels."""
    mean = float(pixels_per_image.sum()) / max(n_images, 1)
    return max(1, int(PIXELS_PER_STEP / max(mean, 1.0)))


@dataclass(frozen=True)
class _Bends:
    """Per (image, distinct defect score) of some images, by image then score descending."""

    image: np.ndarray  # (b,) int64
    fpr_above: np.ndarray  # (b,) FPR(> u)
    fpr_at: np.ndarray  # (b,) FPR(≥ u)
    tpr_before: np.ndarray  # (b,) TPR(> u)
    tpr_at: np.ndarray  # (b,) TPR(≥ u)


def _bends(
    defects: DefectTable,
    region_image: np.ndarray,
    first_region: int,
    stop_region: int,
    n_pixels: int,
    pixels_per_image: np.ndarray,
    pool: NormalPool,
) -> _Bends:
    """The bends of the images owning regions first_region..stop_region − 1, among the
    first n_pixels pixels of the table."""
    head = defects.regions[:n_pixels]  # (p,) a view, scores descending
    mine = np.flatnonzero((head >= first_region) & (head < stop_region))  # (q,) positions
    if mine.size == 0:
        nothing = np.zeros(0)
        return _Bends(np.zeros(0, np.int64), nothing, nothing, nothing, nothing)
    image = region_image[head[mine]].astype(np.int64)  # (q,)
    group = np.searchsorted(defects.group_ends, mine, side="left")  # (q,) distinct score
    order = np.argsort(image, kind="stable")  # (q,) by image, scores still descending
    image, group = image[order], group[order]
    new_run = np.concatenate([[True], (image[1:] != image[:-1]) | (group[1:] != group[:-1])])
    starts = np.flatnonzero(new_run)  # (b,)
    run_image, run_group = image[starts], group[starts]
    run_pixels = np.diff(np.append(starts, image.size))  # (b,)
    new_image = np.concatenate([[True], run_image[1:] != run_image[:-1]])  # (b,)
    running = np.cumsum(run_pixels)  # (b,) across images: reset at each image's first run
    offset = np.maximum.accumulate(np.where(new_image, running - run_pixels, 0))
    tpr_at = (running - offset) / pixels_per_image[run_image]
    tpr_before = np.where(new_image, 0.0, np.concatenate([[0.0], tpr_at[:-1]]))
    scores = defects.edges[run_group]
    return _Bends(
        run_image,
        pool.shared_fpr(scores, strict=True),
        pool.shared_fpr(scores, strict=False),
        tpr_before,
        tpr_at,
    )


def _integrate_bends(
    bends: _Bends,
    area: np.ndarray,
    last_fpr: np.ndarray,
    last_tpr: np.ndarray,
    lower: float,
    upper: float,
) -> None:
    """Add to `area` each image's segments up to its last bend here, in place: the flat
    stretch before each bend (from the previous bend) and the bend itself."""
    if bends.image.size == 0:
        return
    new_image = np.concatenate([[True], bends.image[1:] != bends.image[:-1]])
    previous_fpr = np.where(
        new_image, last_fpr[bends.image], np.concatenate([[0.0], bends.fpr_at[:-1]])
    )
    flat = _log_segment_area(
        previous_fpr, bends.tpr_before, bends.fpr_above, bends.tpr_before, lower, upper
    )
    bend = _log_segment_area(
        bends.fpr_above, bends.tpr_before, bends.fpr_at, bends.tpr_at, lower, upper
    )
    area += np.bincount(bends.image, weights=flat + bend, minlength=area.size)
    last = np.flatnonzero(np.append(bends.image[1:] != bends.image[:-1], True))
    last_fpr[bends.image[last]] = bends.fpr_at[last]
    last_tpr[bends.image[last]] = bends.tpr_at[last]


def _log_segment_area(
    x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray, lower: float, upper: float
) -> np.ndarray:
    """∫ y d(ln x) over [lower, upper] ∩ [x0, x1] of each straight segment of the curve
    on a log-x axis; a segment from x0 = 0 is flat at y1 (see the module docstring)."""
    lo = np.maximum(x0, lower)
    hi = np.minimum(x1, upper)
    inside = hi > lo
    out = np.zeros(x0.size)
    if not inside.any():
        return out
    x0, y0, x1, y1, lo, hi = (a[inside] for a in (x0, y0, x1, y1, lo, hi))
    sloped = (x0 > 0) & (y1 != y0)
    y_lo, y_hi = y1.copy(), y1.copy()
    flat_start = ~sloped & (x0 > 0)
    y_lo[flat_start] = y_hi[flat_start] = y0[flat_start]
    if sloped.any():
        log_x0, log_span = np.log(x0[sloped]), np.log(x1[sloped] / x0[sloped])
        rise = y1[sloped] - y0[sloped]
        y_lo[sloped] = y0[sloped] + rise * (np.log(lo[sloped]) - log_x0) / log_span
        y_hi[sloped] = y0[sloped] + rise * (np.log(hi[sloped]) - log_x0) / log_span
    out[inside] = np.log(hi / lo) * (y_lo + y_hi) / 2.0
    return out
