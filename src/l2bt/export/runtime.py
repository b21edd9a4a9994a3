"""A `Predictor` over an exported ONNX file, run by ONNX Runtime (SPEC §8).

The graph does the whole prediction of one image (see `l2bt.export.graph`); on the host
remain only what a graph does badly: reading the file's metadata (the run's record,
`l2bt.run`), checking an aspect-mode graph's fixed grid and a tiles-mode graph's fixed
image size, and the decision (`decisions.decide`, exactly as the torch engine: mask,
clean-up, verdict, 8-connected regions; the graph's own `mask` and `defective` outputs
are for stations that run the graph alone).
Providers: the CPU, or CUDA when asked for (`device="cuda"`) or available (`"auto"`) in
the installed onnxruntime. Images are run one at a time: their sizes differ and the
graph has no batch axis.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from l2bt.decisions.decide import decided
from l2bt.errors import InputError
from l2bt.export.metadata import CONFIG_KEY, GRAPH_KEY, INPUT_NAME, VERSION_KEY, GraphInfo
from l2bt.prediction import Prediction
from l2bt.preprocess import InputGeometry
from l2bt.run import RunDescription, parse_run

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


def import_onnxruntime(path: str | Path) -> Any:
    """The onnxruntime module, or one plain line naming the file that needed it."""
    try:
        import onnxruntime
    except ImportError as e:
        raise InputError(
            "the onnxruntime engine needs onnxruntime (pip install 'l2bt[export]')", path
        ) from e
    return onnxruntime


def providers_for(device: str, available: Sequence[str]) -> list[str]:
    """ONNX Runtime providers for `device` ("auto", "cpu" or "cuda")."""
    if device == "cpu":
        return [CPU]
    if CUDA in available:
        return [CUDA, CPU]
    if device == "cuda":
        raise InputError(
            "--device cuda was asked for, but this onnxruntime has no CUDA "
            "provider (install onnxruntime-gpu)"
        )
    return [CPU]


@dataclass(frozen=True)
class ExportedRun:
    """What an exported file says about itself: the run's record and the graph."""

    record: RunDescription
    graph: GraphInfo
    exported_by: str

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], path: Path) -> ExportedRun:
        if CONFIG_KEY not in metadata or GRAPH_KEY not in metadata:
            raise InputError(
                "an ONNX file without l2bt metadata (not written by `l2bt export`)", path
            )
        record = parse_run(metadata[CONFIG_KEY], path)
        try:
            graph = GraphInfo.from_dict(json.loads(metadata[GRAPH_KEY]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise InputError(f"unreadable l2bt metadata ({e})", path) from e
        return cls(record, graph, metadata.get(VERSION_KEY, "unknown"))


class OnnxRuntimePredictor:
    """Predicts (H, W, 3) uint8 images with an exported graph: maps at their own size and
    scores, decided (`predict_batch`) at the thresholds of the record in the file's
    metadata, those the graph was exported with."""

    def __init__(self, path: str | Path, device: str = "auto") -> None:
        self.path = Path(path)
        ort = import_onnxruntime(self.path)
        if not self.path.is_file():
            raise InputError("file not found", self.path)
        try:
            self.session = ort.InferenceSession(
                str(self.path), providers=providers_for(device, ort.get_available_providers())
            )
        except Exception as e:  # onnxruntime raises its own error types for bad files
            raise InputError(f"not an ONNX file ({str(e).splitlines()[0]})", self.path) from e
        metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.run = ExportedRun.from_metadata(metadata, self.path)
        self._check_outputs()

    @property
    def record(self) -> RunDescription:
        return self.run.record

    def _check_outputs(self) -> None:
        names = {o.name for o in self.session.get_outputs()}
        inputs = [i.name for i in self.session.get_inputs()]
        if inputs != [INPUT_NAME] or not set(self.run.graph.outputs) <= names:
            raise InputError(
                f"graph inputs {inputs} and outputs {sorted(names)} are not "
                f"those its l2bt metadata names",
                self.path,
            )

    def describe(self) -> dict[str, Any]:
        """The run's record, and how this engine runs it."""
        return {
            **self.run.record.to_dict(),
            "engine": {
                "name": "onnxruntime",
                "file": str(self.path),
                "graph": self.run.graph.to_dict(),
                "exported_by": self.run.exported_by,
                "providers": self.session.get_providers(),
            },
        }

    def predict(self, image: np.ndarray) -> Prediction:
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Predictions decided at the record's thresholds (as the torch engine's)."""
        return decided(self, images)

    def predict_maps(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        return [self._predict_one(np.ascontiguousarray(image, dtype=np.uint8)) for image in images]

    def _predict_one(self, image: np.ndarray) -> Prediction:
        if image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"the graph takes (H, W, 3) RGB images, got {image.shape}")
        self._check_grid(image.shape[0], image.shape[1])
        names = ["anomaly_map", "score"]
        anomaly_map, score = self.session.run(names, {INPUT_NAME: image})
        return Prediction(anomaly_map, float(score))

    def _check_grid(self, height: int, width: int) -> None:
        graph = self.run.graph
        if graph.image_hw is not None and graph.image_hw != (height, width):
            raise InputError(
                f"this tiles-mode graph cuts its windows for {graph.image_hw[0]} x "
                f"{graph.image_hw[1]} images, not {height} x {width} (export again with "
                f"--image-hw {height},{width})",
                self.path,
            )
        if graph.input_mode != "aspect":
            return
        geometry = InputGeometry.aspect(height, width, graph.image_size)
        needed = (geometry.input_height, geometry.input_width)
        if needed != graph.input_hw:
            raise InputError(
                f"a {height} x {width} image needs a {needed[0]} x {needed[1]} teacher input; "
                f"this aspect-mode graph was exported for {graph.input_hw[0]} x "
                f"{graph.input_hw[1]} (export again with --image-hw {height},{width})",
                self.path,
            )
