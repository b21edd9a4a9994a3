"""Precision–recall figures, exact with ties: pixel AP and F1-max from the cell counts,
image F1-max from the image scores, and the figures of decisions already made.

Thresholds: a pixel (image) is predicted defective when its score is ≥ t. Only the
distinct defect scores a₁ > … > a_m can be optimal or change recall, so every pixel
figure is a sum or a maximum over the m edges of `l2bt.metrics.aupro`: at edge j,
TP_j = defect pixels ≥ a_j (a running sum of the pixels per edge) and FP_j = defect-free
pixels ≥ a_j (a running sum of the cells up to cell 2j + 1). O(m) time and memory, no
pixel kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EdgeCounts:
    """True and false positives when thresholding at each edge, top edge first."""

    true_positives: np.ndarray  # (m,) int64: defect pixels ≥ a_j
    false_positives: np.ndarray  # (m,) int64: defect-free pixels ≥ a_j
    n_defect: int

    @classmethod
    def from_cells(cls, cells: np.ndarray, per_edge: np.ndarray) -> EdgeCounts:
        """cells: (2m + 1,) defect-free pixels per cell, top first; per_edge: (m,)."""
        normal_at_or_above = np.cumsum(cells)[1::2]  # (m,) cells 0..2j+1 end at "= a_j"
        return cls(np.cumsum(per_edge), normal_at_or_above, int(per_edge.sum()))


def pixel_average_precision(counts: EdgeCounts) -> float | None:
    """AP over all pixels, as sklearn's `average_precision_score` defines it (the step
    sum Σ (R_j − R_{j−1}) · P_j over distinct scores, ties one threshold); None without
    defect pixels."""
    if counts.n_defect == 0:
        return None
    tp = counts.true_positives.astype(np.float64)
    precision = tp / (tp + counts.false_positives)  # (m,) tp ≥ 1 at every edge
    recall_gain = np.diff(counts.true_positives, prepend=0)  # (m,) defect pixels per edge
    return float(np.dot(recall_gain, precision) / counts.n_defect)


def pixel_f1_max(counts: EdgeCounts) -> float | None:
    """The best pixel F1 = 2TP / (2TP + FP + FN) over every threshold; None without defect
    pixels."""
    if counts.n_defect == 0:
        return None
    tp = counts.true_positives.astype(np.float64)
    return float(np.max(2 * tp / (tp + counts.false_positives + counts.n_defect)))


def image_f1_max(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """The best image F1 over every threshold on the scores (ties one threshold); None
    without an anomalous image."""
    values = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(labels, dtype=bool)
    n_pos = int(positive.sum())
    if n_pos == 0:
        return None
    order = np.argsort(-values, kind="stable")  # (n,) descending scores
    ordered = values[order]
    group_ends = np.flatnonzero(np.append(ordered[1:] != ordered[:-1], True))  # (g,)
    tp = np.cumsum(positive[order])[group_ends].astype(np.float64)  # (g,) at each score
    fp = group_ends + 1 - tp
    return float(np.max(2 * tp / (tp + fp + n_pos)))


def f1_from_counts(tp: int, fp: int, fn: int) -> float | None:
    """2TP / (2TP + FP + FN); None when there is nothing to find and nothing was found."""
    denominator = 2 * tp + fp + fn
    return None if denominator == 0 else 2 * tp / denominator


@dataclass(frozen=True)
class ImageDecisions:
    """Verdicts against labels. precision: defective among defective verdicts (None
    without one); recall: found among anomalous images (None without one); f1 (None
    with neither); false_alarm_rate: defective verdicts among defect-free images (None
    without one)."""

    precision: float | None
    recall: float | None
    f1: float | None
    false_alarm_rate: float | None

    @classmethod
    def from_verdicts(cls, defective: Sequence[bool], labels: Sequence[bool]
                      ) -> ImageDecisions:
        said = np.asarray(defective, dtype=bool)
        truth = np.asarray(labels, dtype=bool)
        tp = int((said & truth).sum())
        fp = int((said & ~truth).sum())
        fn = int((~said & truth).sum())
        n_good = int((~truth).sum())
        return cls(precision=tp / (tp + fp) if tp + fp else None,
                   recall=tp / (tp + fn) if tp + fn else None,
                   f1=f1_from_counts(tp, fp, fn),
                   false_alarm_rate=fp / n_good if n_good else None)
