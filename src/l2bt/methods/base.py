"""The small interface every benchmarked method implements.

A method is fitted on a category's defect-free images and then predicts, for any image,
an anomaly map at the image's original height × width and an image score. The benchmark
treats L2BT, its low-resolution variant, PatchCore and maps made by other tools alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from l2bt.config import Precision, TeacherConfig, check_precision
from l2bt.errors import InputError
from l2bt.prediction import Prediction
from l2bt.run import RunDescription


@dataclass(frozen=True)
class MethodSettings:
    """Settings the benchmark passes to every method (each uses those that apply)."""

    teacher: TeacherConfig = field(default_factory=TeacherConfig)  # and the input settings
    epochs: int | None = None  # None: each method's own default (L2BT 50, a zoo model its authors')
    patch_batch: int | None = None  # L2BT's patches per step (TrainConfig.patch_batch)
    max_steps: int | None = None  # a zoo model's optimiser steps (None: its own schedule)
    imagenet_dir: str | None = None  # EfficientAD's ImageNette (None: anomalib's default)
    device: str = "auto"
    precision: Precision = "fp32"
    cache_dir: str | None = None
    batch_size: int = 4  # images per predict batch
    dinomaly_iterations: int = 10_000  # Dinomaly's training steps (the official recipe)
    dinomaly_batch_size: int = 16  # Dinomaly's images per training step (official)

    def __post_init__(self) -> None:
        check_precision(self.precision)
        for flag, value in (
            ("--epochs", self.epochs),
            ("--max-steps", self.max_steps),
            ("--batch-size", self.batch_size),
        ):
            if value is not None and value < 1:
                raise InputError(f"{flag} must be ≥ 1, got {value}")


class Method(Protocol):
    """Fit on normal images; predict full-resolution maps and scores (undecided)."""

    name: str

    def fit(self, train_images: Sequence[Path], work_dir: Path) -> None:
        """Learn from defect-free images; may keep what it learned under `work_dir`."""
        ...

    @property
    def record(self) -> RunDescription:
        """The fitted method's record (its thresholds are the benchmark's to set)."""
        ...

    def predict_maps(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """(H, W, 3) uint8 images -> undecided predictions at each image's own size."""
        ...

    def describe(self) -> dict[str, Any]:
        """The settings that made this method's results, for the results files."""
        ...
