"""The streaming evaluator: anomaly maps and masks in, every SPEC §6 metric out.

Two passes over the same test images, in any order within a pass:

    evaluator = StreamingEvaluator()
    for anomaly_map, mask in images():            # pass 1: images without defects skipped
        evaluator.add_defects(anomaly_map, mask)
    for anomaly_map, mask, score in images():     # pass 2: every image
        evaluator.add(anomaly_map, mask, score)
    result = evaluator.result("bottle")           # EvaluationResult

Pass 1 labels each mask's regions once (8-connected) and keeps its defect pixels' scores
and region ids. Pass 2 freezes them into a `DefectTable` (sorted once; the m distinct
defect scores become the thresholds), then counts every defect-free pixel into the
2m + 1 cells between and at those scores (`CellCounter`, in batches) and drops it;
`l2bt.metrics.aupro` says why that is exact and why it takes two passes. The size bins,
fixed by quantiles known only at the end, cost nothing extra: `result` weighs the
sorted defect pixels by region, once per bin.

Memory. The defect-free pixels, the bulk (VisA: ~2,000 images × 1.5 MP), take one
fixed buffer of at most 8 M scores (32 MB as float32) whatever the number of images.
What grows with the test set is its ground truth, which exactness needs: 8 bytes per
defect pixel in pass 1 (score, region id), then 4 per defect pixel and 28 per distinct
defect score; 9 bytes per image for image scores. `result` briefly needs about as much
again (the curve's vertices). Per image: its map, mask and a few copies of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from l2bt.metrics.aupro import (
    FPR_LIMITS,
    CellCounter,
    DefectTable,
    ProCurve,
    areas_under,
    fill_pro_vertices,
    fpr_vertices,
    pixel_auroc,
    pro_at_edges,
    thin_curve,
)
from l2bt.metrics.auroc import auroc
from l2bt.metrics.regions import SIZE_BINS, bin_membership, label_regions, size_quantiles
from l2bt.metrics.result import EvaluationResult, robustness


class StreamingEvaluator:
    """Accumulates a test set image by image in two passes; see the module docstring."""

    def __init__(self) -> None:
        self._scores: list[np.ndarray] = []  # pass 1: defect-pixel scores, per image
        self._regions: list[np.ndarray] = []  # their region ids (global), per image
        self._areas: list[np.ndarray] = []  # pixels per region, per image
        self._n_regions = 0
        self._defects: DefectTable | None = None  # pass 1, frozen when pass 2 starts
        self._counter: CellCounter | None = None  # defect-free pixels per cell, pass 2
        self._defect_pixels = [0, 0]  # seen by pass 1 and by pass 2: must agree
        self._image_scores: list[float] = []
        self._image_labels: list[bool] = []

    def add_defects(self, anomaly_map: np.ndarray, mask: np.ndarray) -> None:
        """Pass 1: one image's defect pixels (a mask without any is skipped)."""
        if self._counter is not None:
            raise RuntimeError("add_defects after add: every image's defects come first")
        _check_pair(anomaly_map, mask)
        labels, count = label_regions(mask)  # (H, W) int32, 0 = background
        if count == 0:
            return
        inside = labels > 0  # (H, W) bool
        region_labels = labels[inside]  # (D_i,) 1..count
        self._scores.append(anomaly_map[inside])
        self._regions.append(region_labels - 1 + self._n_regions)  # global ids
        self._areas.append(np.bincount(region_labels, minlength=count + 1)[1:])
        self._n_regions += count
        self._defect_pixels[0] += region_labels.size

    def add(self, anomaly_map: np.ndarray, mask: np.ndarray, score: float | None = None,
            anomalous: bool | None = None) -> None:
        """Pass 2: one image, every image once, after every `add_defects`. `score` is the
        image score (default: the map maximum); `anomalous` its label for I-AUROC
        (default: the mask has a defect)."""
        _check_pair(anomaly_map, mask)
        if score is not None and not np.isfinite(score):
            raise ValueError(f"image score {score} is not finite")
        if self._counter is None:
            self._freeze_defects()
        assert self._counter is not None
        has_defects = bool(mask.any())
        # (n,) the defect-free pixels (a view when all are); the counter copies them
        normal = anomaly_map[~mask] if has_defects else anomaly_map.ravel()
        self._counter.add(normal)
        self._defect_pixels[1] += mask.size - normal.size
        self._image_scores.append(float(anomaly_map.max()) if score is None else float(score))
        self._image_labels.append(has_defects if anomalous is None else bool(anomalous))

    def result(self, category: str = "") -> EvaluationResult:
        """Every metric of SPEC §6; None where it is undefined (see `EvaluationResult`)."""
        if self._counter is None:
            self._freeze_defects()
        assert self._defects is not None and self._counter is not None
        if self._defect_pixels[0] != self._defect_pixels[1]:
            raise RuntimeError(
                f"pass 1 saw {self._defect_pixels[0]} defect pixels, pass 2 "
                f"{self._defect_pixels[1]}: give both passes the same images")
        defects, cells = self._defects, self._counter.counts()
        quantiles = size_quantiles(defects.areas)
        aupro, curves = _aupro_by_bin(defects, cells, bin_membership(defects.areas, quantiles))
        return EvaluationResult(
            category=category,
            n_images=len(self._image_scores),
            n_regions=int(defects.areas.size),
            size_quantiles_px=quantiles,
            i_auroc=auroc(self._image_scores, self._image_labels),
            p_auroc=pixel_auroc(cells, defects.per_edge),
            aupro=aupro,
            robustness={limit: robustness(aupro[limit]) for limit in FPR_LIMITS},
            pro_curves=curves,
        )

    def _freeze_defects(self) -> None:
        """End of pass 1: sort the defect pixels once; their distinct scores are the edges."""
        if self._scores:
            scores, regions = np.concatenate(self._scores), np.concatenate(self._regions)
            areas = np.concatenate(self._areas).astype(np.int64)
        else:
            scores, regions, areas = (np.zeros(0, np.float32), np.zeros(0, np.int32),
                                      np.zeros(0, np.int64))
        self._scores, self._regions, self._areas = [], [], []  # freed: the table has them
        self._defects = DefectTable.from_pixels(scores, regions, areas)
        self._counter = CellCounter(self._defects.edges)


def _aupro_by_bin(defects: DefectTable, cells: np.ndarray, members: dict[str, np.ndarray]
                  ) -> tuple[dict[float, dict[str, float | None]], dict[str, ProCurve]]:
    """AUPRO per limit and bin, and each bin's thinned curve. One FPR array serves every
    bin; one PRO buffer is refilled per bin."""
    aupro: dict[float, dict[str, float | None]] = {
        limit: dict.fromkeys(SIZE_BINS) for limit in FPR_LIMITS}
    curves: dict[str, ProCurve] = {}
    n_normal = int(cells.sum())
    if n_normal == 0 or defects.areas.size == 0:
        return aupro, curves
    top = max(FPR_LIMITS)
    fpr = fpr_vertices(cells, n_normal, top)
    pro = np.empty_like(fpr)
    for name in SIZE_BINS:
        if not members[name].any():
            continue
        fill_pro_vertices(pro, pro_at_edges(defects, members[name]))
        for limit, area in zip(FPR_LIMITS, areas_under(fpr, pro, FPR_LIMITS), strict=True):
            aupro[limit][name] = area / limit
        curves[name] = thin_curve(fpr, pro, top)
    return aupro, curves


def evaluate_arrays(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                    scores: Sequence[float] | None = None, category: str = ""
                    ) -> EvaluationResult:
    """Both passes over maps and masks already in memory (tests, small sets)."""
    evaluator = StreamingEvaluator()
    for anomaly_map, mask in zip(maps, masks, strict=True):
        evaluator.add_defects(anomaly_map, mask)
    for i, (anomaly_map, mask) in enumerate(zip(maps, masks, strict=True)):
        evaluator.add(anomaly_map, mask, None if scores is None else scores[i])
    return evaluator.result(category)


def _check_pair(anomaly_map: np.ndarray, mask: np.ndarray) -> None:
    if anomaly_map.ndim != 2 or anomaly_map.shape != mask.shape:
        raise ValueError(f"map {anomaly_map.shape} and mask {mask.shape} must be equal 2-D "
                         "shapes")
    if mask.dtype != np.bool_:
        raise ValueError(f"mask must be bool, not {mask.dtype}")
    if not np.issubdtype(anomaly_map.dtype, np.number) or not np.isfinite(anomaly_map).all():
        raise ValueError("anomaly map must hold finite numbers")
