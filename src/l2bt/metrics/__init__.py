"""Pure metric functions and the streaming evaluator: exact size-aware AUPRO, AUROCs,
robustness, P-AP, AUPIMO, F1 and decision figures, the low-resolution protocol's
resizing. No I/O here (`l2bt.maps.evaluate` reads maps and masks from disk)."""

from l2bt.metrics.aupro import FPR_LIMITS, area_under
from l2bt.metrics.auroc import auroc
from l2bt.metrics.evaluator import StreamingEvaluator, evaluate_arrays
from l2bt.metrics.parallel import default_workers
from l2bt.metrics.result import EvaluationResult, LowResolution, format_table, robustness
from l2bt.metrics.size_bins import ABSOLUTE_BINS, SIZE_BINS, label_regions

__all__ = [
    "ABSOLUTE_BINS",
    "FPR_LIMITS",
    "SIZE_BINS",
    "EvaluationResult",
    "LowResolution",
    "StreamingEvaluator",
    "area_under",
    "auroc",
    "default_workers",
    "evaluate_arrays",
    "format_table",
    "label_regions",
    "robustness",
]
