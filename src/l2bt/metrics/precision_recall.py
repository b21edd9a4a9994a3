"""Precision–recall figures, exact with ties: pixel AP and F1-max from the cell counts,
image F1-max from the image scores, and the figures of decisions already made.

Thresholds: a pixel (image) is predicted defective when its score is ≥ t. Only the
distinct defect scores a₁ > … > a_m can be optimal or change recall, so every pixel
figure is a sum or a maximum over the m edges of `l2bt.metrics.aupro`: at edge j,
TP_j = defect pixels ≥ a_j (a running sum of the pixels per edge) and FP_j = defect-free
pixels ≥ a_j (a running sum of the cells up to cell 2j + 1). O(m) time, one sweep with
O(EDGE_CHUNK) temporaries, no pixel kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

EDGE_CHUNK = 1 << 20  # edges swept at a time: bounded temporaries


@dataclass(frozen=True)
class PixelPrecisionRecall:
    """AP over all pixels, as sklearn's `average_precision_score` defines it (the step
    sum Σ (R_j − R_{j−1}) · P_j over distinct scores, ties one threshold), and the best
    pixel F1 = 2TP / (2TP + FP + FN) over every threshold; None without defect pixels."""

    average_precision: float | None
    f1_max: float | None

    @classmethod
    def from_cells(cls, cells: np.ndarray, per_edge: np.ndarray) -> PixelPrecisionRecall:
        """cells: (2m + 1,) defect-free pixels per cell, top first; per_edge: (m,) defect
        pixels per edge. One sweep over the edges, EDGE_CHUNK at a time."""
        n_defect = int(per_edge.sum())
        if n_defect == 0:
            return cls(None, None)
        ap_sum, f1_max = 0.0, 0.0
        tp_before, fp_before = 0, 0  # defect and defect-free pixels above the chunk
        for start in range(0, per_edge.size, EDGE_CHUNK):
            gained = per_edge[start : start + EDGE_CHUNK]  # (c,) recall gained at each edge
            tp = tp_before + np.cumsum(gained)  # (c,) defect pixels ≥ a_j
            # cells 2·start … 2·stop − 1 end at "= a_j" on odd positions: FP_j
            fp = fp_before + np.cumsum(cells[2 * start : 2 * (start + gained.size)])[1::2]
            precision = tp / (tp + fp)  # (c,) float64; tp ≥ 1 at every edge
            ap_sum += float(np.sum(gained * precision))  # numpy's sum, not BLAS: same everywhere
            f1_max = max(f1_max, float(np.max(2 * tp / (tp + fp + n_defect))))
            tp_before, fp_before = int(tp[-1]), int(fp[-1])
        return cls(ap_sum / n_defect, f1_max)


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
    def from_verdicts(cls, defective: Sequence[bool], labels: Sequence[bool]) -> ImageDecisions:
        said = np.asarray(defective, dtype=bool)
        truth = np.asarray(labels, dtype=bool)
        tp = int((said & truth).sum())
        fp = int((said & ~truth).sum())
        fn = int((~said & truth).sum())
        n_good = int((~truth).sum())
        return cls(
            precision=tp / (tp + fp) if tp + fp else None,
            recall=tp / (tp + fn) if tp + fn else None,
            f1=f1_from_counts(tp, fp, fn),
            false_alarm_rate=fp / n_good if n_good else None,
        )
