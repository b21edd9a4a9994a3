"""Pure metric functions: exact size-aware AUPRO, AUROC, robustness. No I/O here."""

from l2bt.metrics.aupro import FPR_LIMITS, PixelEvaluator, PixelMetrics, ProCurve, area_under
from l2bt.metrics.auroc import auroc
from l2bt.metrics.regions import SIZE_BINS, label_regions, size_quantiles
from l2bt.metrics.result import EvaluationResult, Robustness, format_table, robustness

__all__ = [
    "FPR_LIMITS", "SIZE_BINS", "EvaluationResult", "PixelEvaluator", "PixelMetrics", "ProCurve",
    "Robustness", "area_under", "auroc", "format_table", "label_regions", "robustness",
    "size_quantiles",
]
