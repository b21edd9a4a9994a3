"""An anomalib model behind the benchmark's `Method` interface: `anomalib:NAME[@N][+tiles]`.

Fit: the model (random or pretrained weights, `weights.py`) is trained through anomalib's
Engine on exactly the training images it is given (`training.py`), on its authors'
schedule unless `--epochs` / `--max-steps` set one, and its tensors are kept under the work
folder with a key of everything they depend on (`artefacts.py`), so a re-run reloads them.
Predict: each image, as anomalib reads a file (float in [0, 1]), goes through the model's
own pre-processor (resize to N × N, its normalisation) and torch model in eval mode; the
raw map (anomalib's normalisation off) is brought to the image's H × W (`maps.py`) and the
image score is the model's raw score. With `+tiles` the model is trained on and predicts
the `--tile-size` windows at native scale, and the score is the top 0.1 % of the blended
map (SPEC §11). Memory: one batch of inputs and maps, plus the model.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from l2bt.anomaly_map import image_score
from l2bt.config import content_digest
from l2bt.methods.artefacts import load_artefact, save_artefact
from l2bt.methods.base import MethodSettings
from l2bt.methods.zoo import training
from l2bt.methods.zoo.maps import tiles_to_image, to_image_size, uncrop
from l2bt.methods.zoo.models import ZooModel
from l2bt.methods.zoo.weights import check_imagenet, check_pretrained
from l2bt.prediction import Prediction
from l2bt.run import RunDescription
from l2bt.tiling import TileLayout, cut_windows
from l2bt.utils.device import resolve_device

MODEL_FORMAT = "l2bt-anomalib/1"
MODEL_FILE = "model.safetensors"
DEFAULT_IMAGENET = "./datasets/imagenette"  # anomalib's default imagenet_dir
WINDOW_BATCH = 16


class ZooMethod:
    """One anomalib model, at its own (or N px) square input, or on native windows."""

    uses_teacher = False  # the benchmark loads no DINOv2 teacher for it

    def __init__(
        self, name: str, model: ZooModel, settings: MethodSettings, size: int | None, tiles: bool
    ) -> None:
        self.name = name
        self.model = model
        self.settings = settings
        self.tiles = settings.teacher.tiles if tiles else None
        self.size = self.tiles.size if self.tiles else (size or model.input_size)
        self.random = settings.teacher.weights == "random"
        self.schedule = model.schedule(settings.epochs, settings.max_steps)
        self.imagenet = settings.imagenet_dir or DEFAULT_IMAGENET
        check_imagenet(model, self.imagenet)
        self.weights_file = None if self.random else check_pretrained(model)
        self.device = resolve_device(settings.device)
        self.module: Any = None  # anomalib's Lightning module, once fitted
        self.facts: dict[str, Any] = {}

    @property
    def protocol_size(self) -> int:
        """The side anomalib's own protocol scores this model's maps at (its input, or its
        crop; the model's default input with `+tiles`)."""
        size = self.model.input_size if self.tiles else self.size
        return self.model.crop_at(size) or size

    # ---- fit ------------------------------------------------------------------------------

    def fit(self, train_images: Sequence[Path], work_dir: Path) -> None:
        """Train through anomalib's Engine, or reload the model trained with the same key."""
        images = [Path(p) for p in train_images]
        work_dir = Path(work_dir)
        key = content_digest({**self.settings_dict(), "train": [str(p) for p in images]})
        self.module = self._build()
        artefact = load_artefact(work_dir, MODEL_FILE, MODEL_FORMAT, key)
        if artefact is not None:
            training.load_state(self.module, artefact.tensors)
            self.facts = {**artefact.described.get("training", {}), "reloaded": True}
            self._ready()
            return
        tic = time.perf_counter()
        staged = training.stage(images, work_dir / training.STAGING, self.tiles)
        accelerator = "gpu" if self.device.type == "cuda" else "cpu"
        run = training.train(
            self.module, self.model, work_dir / training.STAGING, work_dir / "anomalib", accelerator
        )
        shutil.rmtree(work_dir / training.STAGING)  # the model is what is kept
        self.facts = {
            "n_train_images": len(images),
            "n_train_inputs": staged,
            **asdict(run),
            "engine_seconds": round(time.perf_counter() - tic, 3),
        }
        tensors = training.state(self.module)
        save_artefact(work_dir, MODEL_FILE, tensors, MODEL_FORMAT, key, self.describe())
        training.load_state(self.module, tensors)  # as stored, so a reload predicts identically
        self._ready()

    def _build(self) -> Any:
        return training.build(self.model, self.size, self.schedule, self.random, self.imagenet)

    def _ready(self) -> None:
        self.module.to(self.device)
        self.module.model.eval()

    # ---- predict --------------------------------------------------------------------------

    @property
    def record(self) -> RunDescription:
        return RunDescription(method=self.name, teacher=None, weights_id=None, embed_dim=None)

    def predict_maps(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """(H, W, 3) uint8 images -> raw maps at each image's H × W and raw scores."""
        if self.module is None:
            raise RuntimeError(f"{self.name}: fit must run before predict_maps")
        if self.tiles is not None:
            return [self._predict_tiled(image) for image in images]
        maps, scores = self.frame_maps(images)
        return [
            Prediction(to_image_size(m, *image.shape[:2]), float(s))
            for m, s, image in zip(maps, scores, images, strict=True)
        ]

    def _predict_tiled(self, image: np.ndarray) -> Prediction:
        assert self.tiles is not None
        height, width = image.shape[:2]
        layout = TileLayout.for_image(height, width, self.tiles)
        windows = cut_windows(image, layout)  # (N, T, T, 3)
        maps = torch.cat(
            [
                self.frame_maps(list(windows[i : i + WINDOW_BATCH]))[0]
                for i in range(0, len(windows), WINDOW_BATCH)
            ]
        )  # (N, T, T)
        anomaly_map = tiles_to_image(maps, layout)
        return Prediction(anomaly_map, image_score(anomaly_map))

    @torch.inference_mode()
    def frame_maps(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images of any size -> ((B, N, N) raw maps in the model's input frame, (B,) raw
        scores), on the CPU."""
        maps, scores = self.raw_outputs(images)
        return uncrop(maps, self.size), scores

    @torch.inference_mode()
    def raw_outputs(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """What the torch model returns for the images: ((B, C, C) maps, (B,) scores), with C
        the model's input (or crop), before anything of l2bt's."""
        transform = self.module.pre_processor.transform
        batch = torch.stack([transform(training.as_input(image)) for image in images])
        output = self.module.model(batch.to(self.device))  # (B, 3, C, C) -> InferenceBatch
        maps = output.anomaly_map.float().cpu()
        maps = maps.reshape(len(images), *maps.shape[-2:])  # (B[, 1], C, C) -> (B, C, C)
        scores = output.pred_score
        scores = maps.amax(dim=(1, 2)) if scores is None else scores.float().cpu().reshape(-1)
        return maps, scores

    # ---- description ----------------------------------------------------------------------

    def settings_dict(self) -> dict[str, Any]:
        """Everything besides the training images the trained model depends on."""
        return {
            "format": MODEL_FORMAT,
            "anomalib_model": self.model.name,
            "input_size": self.size,
            "crop": self.model.crop_at(self.size),
            "tiles": None if self.tiles is None else asdict(self.tiles),
            "weights": "random" if self.random else self.weights_file,
            "schedule": asdict(self.schedule),
            "imagenet_dir": self.imagenet if self.model.needs_imagenet else None,
        }

    def describe(self) -> dict[str, Any]:
        """Backbone, weights and schedule, for the results files and the report."""
        return {
            "method": self.name,
            "anomalib_class": self.model.class_name,
            "backbone": self.model.backbone,
            "backbone_weights": "random" if self.random else "pretrained",
            "pretrained_file": self.weights_file,
            "input_size": self.size,
            "crop": self.model.crop_at(self.size),
            "input_mode": "tiles" if self.tiles else "stretched to a square",
            "tiles": None if self.tiles is None else asdict(self.tiles),
            "schedule": self.schedule.words(),
            "training": self.facts,
        }
