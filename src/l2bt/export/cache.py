"""A run folder's ONNX export, made on demand for `--engine onnxruntime` and cached.

The export is cached as `<run>/model.onnx`, keyed by a SHA-256 digest of the folder's
`config.json` and `students.safetensors`, the l2bt version and the opset (stored in the
file's metadata as the graph's `source`): a recalibrated or retrained run, or another
l2bt, exports again. Where the run folder cannot be written, the export goes to a
temporary file, removed once ONNX Runtime has read it. An aspect- or tiles-mode run has
no graph for every image size: it is exported with `l2bt export --image-hw H,W` and
predicted from that file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from l2bt import __version__
from l2bt.errors import InputError
from l2bt.export.runtime import OnnxRuntimePredictor
from l2bt.run import CONFIG_FILE, STUDENTS_FILE

if TYPE_CHECKING:
    from l2bt.model import L2BT

CACHE_NAME = "model.onnx"
SOURCE_FILES = (CONFIG_FILE, STUDENTS_FILE)
EXPORT_OPSET = 18


def source_digest(run_dir: Path, opset: int = EXPORT_OPSET) -> str:
    """What an export of the run folder depends on: its files, the l2bt version, the opset."""
    digest = hashlib.sha256(f"l2bt {__version__} opset {opset}".encode())
    for name in SOURCE_FILES:
        file = run_dir / name
        if not file.is_file():
            raise InputError(f"not an l2bt run folder (no {name})", run_dir)
        digest.update(name.encode())
        with file.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:32]


def exported_run(
    run_dir: Path, device: str = "auto", weights: str | None = None
) -> OnnxRuntimePredictor:
    """The run folder's cached export, exporting (again) when it is missing or stale."""
    source = source_digest(run_dir)
    cached = run_dir / CACHE_NAME
    if cached.is_file():
        predictor = OnnxRuntimePredictor(cached, device)
        if predictor.run.graph.source == source:
            return predictor
    model = _load_for_export(run_dir, weights)
    from l2bt.export.exporter import export_onnx

    if os.access(run_dir, os.W_OK):
        export_onnx(model, cached, EXPORT_OPSET, source=source)
        return OnnxRuntimePredictor(cached, device)
    with tempfile.TemporaryDirectory(prefix="l2bt-onnx-") as scratch:  # for this process only
        export_onnx(model, Path(scratch) / CACHE_NAME, EXPORT_OPSET, source=source)
        return OnnxRuntimePredictor(Path(scratch) / CACHE_NAME, device)


def _load_for_export(run_dir: Path, weights: str | None) -> L2BT:
    from l2bt.model import L2BT

    model = L2BT.load(run_dir, device="cpu", weights=weights)
    mode = model.config.teacher.input_mode
    if mode != "pad":
        raise InputError(
            f"an {mode}-mode run is exported for one image size: run `l2bt "
            "export --model RUN --image-hw H,W --out FILE.onnx` and predict "
            "with FILE.onnx",
            run_dir,
        )
    return model
