"""AUROC over image scores (I-AUROC), exact with ties.

The Mann–Whitney statistic from tie-aware average ranks, computed here with one sort
(O(n log n) time, O(n) memory) rather than with `scipy.stats`, whose import alone takes
about a second and would delay `l2bt evaluate`'s start.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def average_ranks(values: np.ndarray) -> np.ndarray:
    """(n,) float64 ranks 1..n of `values` ((n,) real), ties sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")  # (n,)
    ordered = values[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))  # (g,)
    ends = np.concatenate([starts[1:], [values.size]])  # (g,) exclusive
    mean_rank = (starts + ends + 1) / 2.0  # (g,) mean of ranks starts+1 .. ends
    ranks = np.empty(values.size, np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """P(score of a positive > score of a negative), ties counting one half.

    The Mann–Whitney statistic from average ranks; None when a class is empty.
    """
    values = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    u = average_ranks(values)[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))
