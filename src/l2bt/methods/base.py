"""The small interface every benchmarked method implements.

A method is fitted on a category's defect-free images and then predicts, for any image,
an anomaly map at the image's original height × width and an image score. The benchmark
treats L2BT, its low-resolution variant, PatchCore and maps made by other tools alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from l2bt.prediction import Prediction


@dataclass(frozen=True)
class MethodSettings:
    """Settings the benchmark passes to every method (each uses those that apply)."""

    teacher: str = "dinov2_vitb14_reg"
    weights: str | None = None
    image_size: int = 1036
    input_mode: str = "pad"  # SPEC §9, §11: "pad" (the paper), "aspect" or "tiles"
    tile_size: int = 518  # tiles mode: window side T, least overlap (None: T // 4), scale s
    tile_overlap: int | None = None
    tile_scale: float = 1.0
    epochs: int = 50
    device: str = "auto"
    precision: str = "fp32"
    cache_dir: str | None = None
    batch_size: int = 4  # images per predict batch
    dinomaly_iterations: int = 10_000  # Dinomaly's training steps (the official recipe)
    dinomaly_batch_size: int = 16  # Dinomaly's images per training step (official)


class Method(Protocol):
    """Fit on normal images; predict full-resolution maps and scores."""

    name: str

    def fit(self, train_images: Sequence[Path], work_dir: Path, progress: bool) -> None:
        """Learn from defect-free images; may keep what it learned under `work_dir`."""
        ...

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """(H, W, 3) uint8 images -> predictions at each image's own size."""
        ...

    def describe(self) -> dict[str, Any]:
        """The settings that made this method's results, for the results files."""
        ...
