"""Pure metric functions and the streaming evaluator: exact size-aware AUPRO, AUROCs,
robustness. No I/O here (`l2bt.evaluation` reads maps and masks from disk)."""

from l2bt.metrics.aupro import FPR_LIMITS, DefectTable, ProCurve, area_under
from l2bt.metrics.auroc import auroc
from l2bt.metrics.evaluator import StreamingEvaluator, evaluate_arrays
from l2bt.metrics.regions import SIZE_BINS, label_regions, size_quantiles
from l2bt.metrics.result import EvaluationResult, Robustness, format_table, robustness

__all__ = [
    "FPR_LIMITS", "SIZE_BINS", "DefectTable", "EvaluationResult", "ProCurve", "Robustness",
    "StreamingEvaluator", "area_under", "auroc", "evaluate_arrays", "format_table",
    "label_regions", "robustness", "size_quantiles",
]
