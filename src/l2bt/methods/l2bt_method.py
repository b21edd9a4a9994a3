"""L2BT behind the benchmark's `Method` interface: at full resolution, or at a low one.

`l2bt@224` is the same method with a 224 px input and the map upsampled to the original
size: the usual protocol the paper argues against, so the resolution effect shows in the
size bins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from l2bt.config import L2BTConfig, TrainConfig
from l2bt.methods.base import MethodSettings
from l2bt.model import L2BT
from l2bt.prediction import Prediction
from l2bt.run import CONFIG_FILE, RunDescription

RUN_FOLDER = "run"  # the run folder under the method's work folder: `predict --model`


class L2BTMethod:
    """Fits (or reloads) an L2BT run folder under the method's work folder."""

    def __init__(self, settings: MethodSettings, image_size: int | None = None) -> None:
        size = image_size or settings.teacher.image_size
        self.name = "l2bt" if image_size is None else f"l2bt@{image_size}"
        self.settings = settings
        epochs = TrainConfig.epochs if settings.epochs is None else settings.epochs
        train = TrainConfig(epochs=epochs, patch_batch=settings.patch_batch)
        self.config = L2BTConfig(replace(settings.teacher, image_size=size), train)
        self.model: L2BT | None = None

    def fit(self, train_images: Sequence[Path], work_dir: Path) -> None:
        run_dir = work_dir / RUN_FOLDER
        if (run_dir / CONFIG_FILE).is_file():
            self.model = L2BT.load(
                run_dir,
                self.settings.device,
                self.settings.precision,
                weights=self.settings.teacher.weights,
            )
            return
        self.model = L2BT.fit(
            train_images,
            self.config,
            device=self.settings.device,
            precision=self.settings.precision,
            cache_dir=self.settings.cache_dir,
        )
        self.model.save(run_dir, overwrite=True)

    @property
    def record(self) -> RunDescription:
        assert self.model is not None, "fit first"
        return self.model.record

    def predict_maps(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        assert self.model is not None, "fit first"
        return self.model.predict_maps(images)

    def describe(self) -> dict[str, Any]:
        info = {
            "method": self.name,
            "config": self.config.to_dict(),
            "precision": self.settings.precision,
        }
        if self.model is not None:
            info["teacher_weights_id"] = self.model.teacher.weights_id
            training = self.model.record.training
            info["training"] = {} if training is None else asdict(training)
        return info
