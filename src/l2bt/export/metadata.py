"""What an exported graph says about itself: the keys of its `metadata_props`.

Kept free of torch and onnx, so that the ONNX Runtime engine reads them without either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

INPUT_NAME = "image"
CONFIG_KEY = "l2bt_config"  # the run's config.json
VERSION_KEY = "l2bt_version"  # the l2bt that exported the file
GRAPH_KEY = "l2bt_graph"  # GraphInfo as JSON


@dataclass(frozen=True)
class GraphInfo:
    """What an exported graph computes: `l2bt_graph` in its metadata."""

    input_mode: str
    image_size: int
    input_hw: tuple[int, int]
    outputs: tuple[str, ...]
    opset: int
    source: str | None = None
    image_hw: tuple[int, int] | None = None  # tiles mode: the one image size it takes

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_mode": self.input_mode,
            "image_size": self.image_size,
            "input_hw": list(self.input_hw),
            "outputs": list(self.outputs),
            "opset": self.opset,
            "source": self.source,
            "image_hw": None if self.image_hw is None else list(self.image_hw),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GraphInfo:
        height, width = data["input_hw"]
        image_hw = data.get("image_hw")
        return cls(
            str(data["input_mode"]),
            int(data["image_size"]),
            (int(height), int(width)),
            tuple(data["outputs"]),
            int(data["opset"]),
            data.get("source"),
            None if image_hw is None else (int(image_hw[0]), int(image_hw[1])),
        )
