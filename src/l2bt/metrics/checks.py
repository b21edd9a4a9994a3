"""What the evaluator accepts: 2-D maps of finite real numbers and bool masks of the same
shape, each problem a `ValueError` saying which."""

from __future__ import annotations

import math

import numpy as np


def check_pair(anomaly_map: np.ndarray, mask: np.ndarray) -> float:
    """Checks shapes, types and values; returns the map's maximum (one pass less)."""
    if anomaly_map.ndim != 2 or anomaly_map.shape != mask.shape:
        raise ValueError(f"map {anomaly_map.shape} and mask {mask.shape} must be equal 2-D shapes")
    check_mask(mask)
    if anomaly_map.size == 0:
        raise ValueError("anomaly map is empty")
    if anomaly_map.dtype.kind not in "fiu":
        raise ValueError("anomaly map must hold finite numbers")
    highest = float(anomaly_map.max())
    if not (math.isfinite(highest) and math.isfinite(float(anomaly_map.min()))):
        raise ValueError("anomaly map must hold finite numbers")
    return highest


def check_mask(mask: np.ndarray) -> None:
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, not {mask.shape}")
    if mask.dtype != np.bool_:
        raise ValueError(f"mask must be bool, not {mask.dtype}")


def check_scores(values: np.ndarray) -> None:
    if values.dtype.kind not in "fiu" or not all_finite(values):
        raise ValueError("anomaly map must hold finite numbers")


def all_finite(values: np.ndarray) -> bool:
    """No NaN or infinity among real `values`: from their extremes (NaN propagates to
    them), so no temporary the size of the array."""
    if values.dtype.kind in "iu" or values.size == 0:
        return True
    return bool(np.isfinite(values.min()) and np.isfinite(values.max()))
