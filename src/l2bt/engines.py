"""Which engine runs a model: `torch` (`L2BT`, eager) or `onnxruntime` (an exported graph).

    engine = load_engine("runs/bottle")                          # torch
    engine = load_engine("model.onnx")                           # onnxruntime
    engine = load_engine("runs/bottle", engine="onnxruntime")    # exported on the fly

A run folder run with `onnxruntime` is exported once and cached (`l2bt.export.cache`).
Both engines give the same `Prediction`s, up to the measured error of the graph's
in-graph resize (see `l2bt.export.graph`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from l2bt.errors import InputError
from l2bt.prediction import Prediction, Predictor

ENGINES = ("torch", "onnxruntime")


class Engine(Predictor, Protocol):
    """A predictor of a trained run that also decides (`predict_batch`, at its record's
    thresholds) and describes itself as JSON (the record, and how the engine runs it)."""

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[Prediction]: ...

    def describe(self) -> dict[str, Any]: ...


def default_engine(model: str | Path) -> str:
    """torch for a run folder, onnxruntime for an exported file."""
    return "onnxruntime" if Path(model).is_file() else "torch"


def load_engine(
    model: str | Path,
    engine: str | None = None,
    device: str = "auto",
    precision: str | None = None,
    weights: str | None = None,
) -> Engine:
    """The predictor for `model` (a run folder or an exported .onnx file) on `engine`
    (None: `default_engine`). `precision` and `weights` are the torch engine's (and the
    teacher of an on-the-fly export)."""
    path = Path(model)
    engine = engine or default_engine(path)
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "torch":
        if path.is_file():
            raise InputError("an exported file runs with --engine onnxruntime, not torch", path)
        from l2bt.model import L2BT

        return L2BT.load(path, device=device, precision=precision, weights=weights)
    if precision == "bf16":
        raise InputError("the onnxruntime engine computes in fp32 (no --precision bf16)", path)
    from l2bt.export.cache import exported_run
    from l2bt.export.runtime import OnnxRuntimePredictor, import_onnxruntime

    import_onnxruntime(path)
    if path.is_dir():
        return exported_run(path, device, weights)
    return OnnxRuntimePredictor(path, device)
