"""L2BT behind the benchmark's `Method` interface: at full resolution, or at a low one.

`l2bt@224` is the same method with a 224 px input and the map upsampled to the original
size: the usual protocol the paper argues against, so the resolution effect shows in the
size bins.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from l2bt.config import L2BTConfig, TeacherConfig, TrainConfig
from l2bt.methods.base import MethodSettings
from l2bt.model import L2BT
from l2bt.prediction import Prediction


class L2BTMethod:
    """Fits (or reloads) an L2BT run folder under the method's work folder."""

    def __init__(self, settings: MethodSettings, image_size: int | None = None) -> None:
        size = image_size or settings.image_size
        self.name = "l2bt" if image_size is None else f"l2bt@{image_size}"
        self.settings = settings
        self.config = L2BTConfig(
            TeacherConfig(
                settings.teacher,
                settings.weights,
                size,
                input_mode=settings.input_mode,
                tile_size=settings.tile_size,
                tile_overlap=settings.tile_overlap,
                tile_scale=settings.tile_scale,
            ),
            TrainConfig(epochs=settings.epochs),
        )
        self.model: L2BT | None = None

    def fit(self, train_images: Sequence[Path], work_dir: Path, progress: bool) -> None:
        run_dir = work_dir / "run"
        if (run_dir / "config.json").is_file():
            self.model = L2BT.load(
                run_dir,
                self.settings.device,
                self.settings.precision,
                weights=self.settings.weights,
            )
            return
        self.model = L2BT.fit(
            train_images,
            self.config,
            self.settings.device,
            self.settings.precision,
            self.settings.cache_dir,
            progress,
        )
        self.model.save(run_dir, overwrite=True)

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        assert self.model is not None, "fit first"
        return self.model.predict_batch(images)

    @property
    def colour_range(self) -> tuple[float, float] | None:
        normal = self.model.info.get("normal_patch_scores") if self.model else None
        return (normal["median"], normal["max"]) if normal else None

    def describe(self) -> dict[str, Any]:
        info = {
            "method": self.name,
            "config": self.config.to_dict(),
            "precision": self.settings.precision,
        }
        if self.model is not None:
            info["teacher_weights_id"] = self.model.teacher.weights_id
            info["training"] = self.model.info.get("training", {})
        return info
