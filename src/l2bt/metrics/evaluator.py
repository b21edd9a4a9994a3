"""The streaming evaluator: anomaly maps and masks in, every SPEC §6 metric out.

Two passes over the same test images, in any order within a pass:

    evaluator = StreamingEvaluator(n_images=len(images))
    for anomaly_map, mask in images():            # pass 1: images without defects skipped
        evaluator.add_defects(anomaly_map, mask)
    for anomaly_map, mask, score in images():     # pass 2: every image
        evaluator.add(anomaly_map, mask, score)
    result = evaluator.result("bottle")           # EvaluationResult

Pass 1 keeps each defect pixel's score and region; pass 2 sorts them once (`DefectTable`),
then counts every pixel into the cells between and at the distinct defect scores
(`l2bt.metrics.cells`) and drops it; every pixel figure comes from those counts, exactly.
Memory: `workers` buffers of pixels whatever the number of images, plus what exactness
needs of the ground truth (about 8 bytes per defect pixel and 28 per distinct defect
score). The full account: docs/design.md; figures: benchmarks/README.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from l2bt.metrics.aupimo import FPR_BOUNDS, Aupimo, NormalPool, aupimo_scores
from l2bt.metrics.aupro import (
    FPR_LIMITS,
    DefectTable,
    aupro_by_bin,
    pixel_auroc,
)
from l2bt.metrics.auroc import auroc
from l2bt.metrics.cells import CellCounter
from l2bt.metrics.checks import check_mask, check_pair, check_scores
from l2bt.metrics.parallel import ParallelCellCounter
from l2bt.metrics.precision_recall import (
    ImageDecisions,
    PixelPrecisionRecall,
    f1_from_counts,
    image_f1_max,
)
from l2bt.metrics.result import (
    Decisions,
    EvaluationResult,
    Oracle,
    robustness,
)
from l2bt.metrics.size_bins import (
    absolute_membership,
    bin_membership,
    label_defect_pixels,
    size_quantiles,
)

MaskRule = Callable[[np.ndarray], np.ndarray]  # (H, W) map -> (H, W) bool mask


class StreamingEvaluator:
    """Accumulates a test set image by image in two passes; see the module docstring.

    `n_images`: how many images pass 2 will see (needed for AUPIMO, checked at the end).
    `workers`: threads counting defect-free pixels (1: all in the caller's thread).
    `aupimo_fpr_bounds`: AUPIMO's integration range (SPEC: 1e-5 to 1e-4).
    `mask_rules`: named ways to binarise a map (e.g. each stored threshold with its
    clean-up): pass 2 applies each to every map and `result` gives their SegF1.
    """

    def __init__(
        self,
        n_images: int | None = None,
        workers: int = 1,
        aupimo_fpr_bounds: tuple[float, float] = FPR_BOUNDS,
        mask_rules: Mapping[str, MaskRule] | None = None,
    ) -> None:
        self._mask_rules = dict(mask_rules or {})
        self._rule_counts = {name: [0, 0, 0] for name in self._mask_rules}  # TP, FP, FN
        self._n_images_expected = n_images
        self._workers = workers
        self._aupimo_bounds = aupimo_fpr_bounds
        self._scores: list[np.ndarray] = []  # pass 1: defect-pixel scores, per image
        self._regions: list[np.ndarray] = []  # their region ids (global), per image
        self._areas: list[np.ndarray] = []  # pixels per region, per image
        self._defective_keys: list[str] = []  # pass 1: images with defects, in order
        self._n_pass1 = 0
        self._defects: DefectTable | None = None  # pass 1, frozen when pass 2 starts
        self._region_image: np.ndarray | None = None  # (R,) each region's defective image
        self._counter: CellCounter | ParallelCellCounter | None = None  # pass 2 cells
        self._pool: NormalPool | None = None  # pass 2: top of the normal images' scores
        self._defect_pixels = [0, 0]  # seen by pass 1 and by pass 2: must agree
        self._image_scores: list[float] = []
        self._image_labels: list[bool] = []
        self._verdicts: list[bool] = []  # pass 2: defective verdicts, where given
        self._segmentation = [0, 0, 0, 0]  # predicted masks: TP, FP, FN, images with one

    # ---- pass 1 ----------------------------------------------------------------------

    def add_defects(
        self, anomaly_map: np.ndarray, mask: np.ndarray, key: str | None = None
    ) -> None:
        """Pass 1: one image's defect pixels (a mask without any is skipped)."""
        check_pair(anomaly_map, mask)
        self.add_defect_scores(mask, anomaly_map[mask], key)

    def add_defect_scores(
        self, mask: np.ndarray, scores: np.ndarray, key: str | None = None
    ) -> None:
        """Pass 1 from the defect pixels alone: `scores` ((D_i,)) are the map's values at
        the mask's True pixels in row-major order (what `anomaly_map[mask]` gives)."""
        if self._counter is not None:
            raise RuntimeError("add_defects after add: every image's defects come first")
        check_mask(mask)
        if scores.ndim != 1 or scores.size != np.count_nonzero(mask):
            raise ValueError(f"{scores.shape} scores for {np.count_nonzero(mask)} defect pixels")
        check_scores(scores)
        key = f"image {self._n_pass1}" if key is None else key
        self._n_pass1 += 1
        region_labels, count = label_defect_pixels(mask)  # (D_i,) 1..count, like `scores`
        if count == 0:
            return
        n_regions = sum(a.size for a in self._areas)
        self._scores.append(scores)
        self._regions.append(region_labels - 1 + n_regions)  # global ids
        self._areas.append(np.bincount(region_labels, minlength=count + 1)[1:])
        self._defective_keys.append(key)
        self._defect_pixels[0] += region_labels.size

    # ---- pass 2 ----------------------------------------------------------------------

    def add(
        self,
        anomaly_map: np.ndarray,
        mask: np.ndarray,
        score: float | None = None,
        anomalous: bool | None = None,
        *,
        verdict: bool | None = None,
        predicted_mask: np.ndarray | None = None,
    ) -> None:
        """Pass 2: one image, every image once, after every `add_defects`. `score` is the
        image score (default: the map maximum); `anomalous` its label for I-AUROC
        (default: the mask has a defect). Decisions, when made: `verdict` (True:
        defective) and `predicted_mask` ((H, W) bool)."""
        highest = check_pair(anomaly_map, mask)
        if score is not None and not np.isfinite(score):
            raise ValueError(f"image score {score} is not finite")
        if self._counter is None:
            self._freeze_defects()
        assert self._counter is not None
        n_defect = int(np.count_nonzero(mask))
        pixels = anomaly_map.ravel()  # (H·W,) a view when contiguous; the counter copies
        self._counter.add(pixels)  # defect pixels too: `result` takes them out again
        if n_defect == 0 and self._pool is not None:
            self._pool.add(pixels)
        self._defect_pixels[1] += n_defect
        has_defects = n_defect > 0
        self._image_scores.append(highest if score is None else float(score))
        self._image_labels.append(has_defects if anomalous is None else bool(anomalous))
        if verdict is not None:
            self._verdicts.append(bool(verdict))
        if predicted_mask is not None:
            _count_segmentation(self._segmentation, predicted_mask, mask)
            self._segmentation[3] += 1
        for name, rule in self._mask_rules.items():
            _count_segmentation(self._rule_counts[name], rule(anomaly_map), mask)

    # ---- the result ------------------------------------------------------------------

    def result(self, category: str = "") -> EvaluationResult:
        """Every metric of SPEC §6 and §7; None where it is undefined (see
        `EvaluationResult`)."""
        if self._counter is None:
            self._freeze_defects()
        assert self._defects is not None and self._counter is not None
        if self._defect_pixels[0] != self._defect_pixels[1]:
            raise RuntimeError(
                f"pass 1 saw {self._defect_pixels[0]} defect pixels, pass 2 "
                f"{self._defect_pixels[1]}: give both passes the same images"
            )
        n_images = len(self._image_scores)
        if self._n_images_expected is not None and n_images != self._n_images_expected:
            raise RuntimeError(
                f"pass 2 saw {n_images} images, not the {self._n_images_expected} announced"
            )
        defects, cells = self._defects, _defect_free(self._counter.counts(), self._defects)
        quantiles = size_quantiles(defects.areas)
        aupro, curves = aupro_by_bin(defects, cells, bin_membership(defects.areas, quantiles))
        aupro_abs, _ = aupro_by_bin(defects, cells, absolute_membership(defects.areas))
        pixel_pr = PixelPrecisionRecall.from_cells(cells, defects.per_edge)
        return EvaluationResult(
            category=category,
            n_images=n_images,
            n_regions=int(defects.areas.size),
            size_quantiles_px=quantiles,
            i_auroc=auroc(self._image_scores, self._image_labels),
            p_auroc=pixel_auroc(cells, defects.per_edge),
            aupro=aupro,
            robustness={limit: robustness(aupro[limit]) for limit in FPR_LIMITS},
            pro_curves=curves,
            p_ap=pixel_pr.average_precision,
            aupro_abs=aupro_abs,
            aupimo=self._aupimo(),
            oracle=Oracle(image_f1_max(self._image_scores, self._image_labels), pixel_pr.f1_max),
            decisions=self._decisions(n_images),
            seg_f1_at={name: f1_from_counts(*counts) for name, counts in self._rule_counts.items()},
        )

    def _aupimo(self) -> Aupimo:
        if self._pool is None or self._defects is None or self._region_image is None:
            return Aupimo(None, {})
        scores = aupimo_scores(
            self._defects,
            self._region_image,
            len(self._defective_keys),
            self._pool,
            self._aupimo_bounds,
        )
        if self._pool.n_images == 0 or scores.size == 0:
            return Aupimo(None, {})
        return Aupimo(
            float(scores.mean()),
            {k: float(v) for k, v in zip(self._defective_keys, scores, strict=True)},
        )

    def _decisions(self, n_images: int) -> Decisions | None:
        if len(self._verdicts) != n_images or self._segmentation[3] != n_images:
            return None
        tp, fp, fn, _ = self._segmentation
        return Decisions(
            ImageDecisions.from_verdicts(self._verdicts, self._image_labels),
            f1_from_counts(tp, fp, fn),
        )

    def _freeze_defects(self) -> None:
        """End of pass 1: sort the defect pixels once; their distinct scores are the edges."""
        if self._scores:
            scores, regions = np.concatenate(self._scores), np.concatenate(self._regions)
            areas = np.concatenate(self._areas).astype(np.int64)
        else:
            scores, regions, areas = (
                np.zeros(0, np.float32),
                np.zeros(0, np.int32),
                np.zeros(0, np.int64),
            )
        self._region_image = np.repeat(
            np.arange(len(self._areas), dtype=np.int32), [a.size for a in self._areas]
        )  # (R,)
        self._scores, self._regions, self._areas = [], [], []  # freed: the table has them
        self._defects = DefectTable.from_pixels(scores, regions, areas)
        edges = self._defects.edges
        self._counter = (
            ParallelCellCounter(edges, self._workers) if self._workers > 1 else CellCounter(edges)
        )
        if self._n_images_expected is not None:
            n_normal = self._n_images_expected - len(self._defective_keys)
            if n_normal < 0:
                raise RuntimeError(
                    f"{len(self._defective_keys)} images with defects, but "
                    f"only {self._n_images_expected} announced"
                )
            self._pool = NormalPool(n_normal, self._aupimo_bounds[1])


def _defect_free(cells: np.ndarray, defects: DefectTable) -> np.ndarray:
    """Pass 2 counted every pixel; each defect pixel equals its edge, so it sits in that
    edge's equal-cell: taking them out there leaves the defect-free counts, exactly."""
    equal = cells[1::2]  # (m,) view: the cells "= a_j"
    equal -= defects.per_edge
    if equal.size and equal.min() < 0:
        raise RuntimeError(
            "pass 2's maps differ from pass 1's at defect pixels: give both passes the same maps"
        )
    return cells


def _count_segmentation(counts: list[int], predicted: np.ndarray, mask: np.ndarray) -> None:
    """Add one image's TP, FP and FN pixels to `counts[:3]`."""
    if predicted.shape != mask.shape or predicted.dtype != np.bool_:
        raise ValueError(
            f"predicted mask must be bool {mask.shape}, not {predicted.dtype} {predicted.shape}"
        )
    hits = int(np.count_nonzero(predicted & mask))
    counts[0] += hits
    counts[1] += int(np.count_nonzero(predicted)) - hits
    counts[2] += int(np.count_nonzero(mask)) - hits


def evaluate_arrays(
    maps: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    scores: Sequence[float] | None = None,
    category: str = "",
    workers: int = 1,
    aupimo_fpr_bounds: tuple[float, float] = FPR_BOUNDS,
    keys: Sequence[str] | None = None,
    mask_rules: Mapping[str, MaskRule] | None = None,
) -> EvaluationResult:
    """Both passes over maps and masks already in memory (tests, small sets); images are
    keyed by `keys`, else "0", "1", … by position."""
    evaluator = StreamingEvaluator(
        n_images=len(maps),
        workers=workers,
        aupimo_fpr_bounds=aupimo_fpr_bounds,
        mask_rules=mask_rules,
    )
    for i, (anomaly_map, mask) in enumerate(zip(maps, masks, strict=True)):
        evaluator.add_defects(anomaly_map, mask, key=str(i) if keys is None else keys[i])
    for i, (anomaly_map, mask) in enumerate(zip(maps, masks, strict=True)):
        evaluator.add(anomaly_map, mask, None if scores is None else scores[i])
    return evaluator.result(category)
