"""Dinomaly (Guo et al., CVPR 2025) on the shared frozen DINOv2 teacher.

The frozen teacher encodes an image; the raw outputs of its eight middle blocks are the
targets. Their mean goes through a noisy bottleneck and eight linear-attention blocks
(`dinomaly_decoder`), trained with the loose cosine loss (`dinomaly_training`). The map is,
per group of four layers, 1 − cosine between target and output at each patch, averaged
over the groups, upsampled bilinearly and smoothed with a 5 × 5, σ = 4 Gaussian; the score
is the mean of the map's top 1 %.

What the shared road changes from the official code (guojiajeremy/Dinomaly, c5c76d0):
the teacher follows the DINOv2 release (`MethodSettings.teacher`; position embeddings
interpolated without the official loader's 0.1 offset; ViT-g has no target layers and is
refused); the input is `l2bt.preprocess`'s for every method (pad or aspect at `image_size`, or
tiles: each window one input, a training step `batch_size` windows of the step's images)
instead of a 392 px centre crop; the map is smoothed at full resolution
in the geometry's frame and cropped to the image (`l2bt.anomaly_map.to_image_maps`), not
at 256 px; seed 0; `precision="bf16"` runs the frozen encoder in bfloat16 while the
decoder trains in float32. Memory and FLOP counts: benchmarks/README.md.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from l2bt.anomaly_map import predict_images, to_image_maps, top_mean
from l2bt.config import content_digest
from l2bt.errors import InputError
from l2bt.features import cache_key
from l2bt.methods.artefacts import load_artefact, save_artefact
from l2bt.methods.base import MethodSettings
from l2bt.methods.dinomaly_decoder import (
    DecoderConfig,
    DinomalyDecoder,
    grouped_patches,
    init_official,
)
from l2bt.methods.dinomaly_training import (
    DinomalyRecipe,
    encoder_layers,
    prefetched,
    target_layers,
    train_decoder,
    training_inputs,
)
from l2bt.prediction import Prediction
from l2bt.preprocess import InputGeometry
from l2bt.run import RunDescription
from l2bt.teacher import ARCHITECTURES, Teacher, load_teacher
from l2bt.utils.device import resolve_device

MODEL_FORMAT = "l2bt-dinomaly/1"
WEIGHTS_FILE = "decoder.safetensors"
LOSS_WINDOW = 100  # the final loss: the mean over the last 100 iterations, as logged officially


def group_maps(targets: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """(B, h, w, D) per group -> (B, G, h, w): 1 − cosine at each patch, per group."""
    return torch.stack(
        [1 - F.cosine_similarity(t, o, dim=-1) for t, o in zip(targets, outputs, strict=True)],
        dim=1,
    )


def gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    """The official `get_gaussian_kernel`: a size × size Gaussian summing to 1, (1, 1, k, k)."""
    offsets = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    squared = offsets[None, :] ** 2 + offsets[:, None] ** 2  # (k, k)
    kernel = torch.exp(-squared / (2 * sigma**2))
    return (kernel / kernel.sum()).view(1, 1, size, size)


def gaussian_blur(maps: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) maps convolved with the (1, 1, k, k) `kernel`, zero padding."""
    return F.conv2d(maps, kernel.to(maps.device), padding=kernel.shape[-1] // 2)


@dataclass(frozen=True, eq=False)
class GaussianBlur:
    """`gaussian_blur` with a fixed (1, 1, k, k) kernel, as a smoothing pass of reach k // 2."""

    kernel: torch.Tensor

    @property
    def reach(self) -> tuple[int, int]:
        return self.kernel.shape[-2] // 2, self.kernel.shape[-1] // 2

    def __call__(self, maps: torch.Tensor) -> torch.Tensor:
        return gaussian_blur(maps, self.kernel)


def to_full_resolution(
    patch_maps: torch.Tensor, geometry: InputGeometry, kernel: torch.Tensor
) -> np.ndarray:
    """(B, h, w) patch maps of images sharing one geometry -> (B, H, W) float32 maps:
    the shared map-to-image step with Dinomaly's bilinear upsampling (align_corners=True,
    as official) and Gaussian `kernel` in place of L2BT's box blurs."""
    return to_image_maps(patch_maps, geometry, (GaussianBlur(kernel),), align_corners=True)


def top_fraction_score(anomaly_map: np.ndarray, fraction: float) -> float:
    """Mean of the top int(fraction · pixels) map values, at least one (official
    `max_ratio`)."""
    return top_mean(anomaly_map, max(1, int(anomaly_map.size * fraction)))


class Dinomaly:
    """Reconstruct the teacher's middle layers through a noisy bottleneck; anomaly = what
    the decoder fails to restore."""

    name = "dinomaly"

    def __init__(
        self,
        settings: MethodSettings,
        iterations: int | None = None,
        batch_size: int | None = None,
        seed: int = 0,
        recipe: DinomalyRecipe | None = None,
    ) -> None:
        self.settings = settings
        self.iterations = settings.dinomaly_iterations if iterations is None else iterations
        self.batch_size = settings.dinomaly_batch_size if batch_size is None else batch_size
        if self.iterations < 1 or self.batch_size < 1:
            raise InputError(
                f"Dinomaly needs ≥ 1 iteration and a batch size ≥ 1, got "
                f"{self.iterations} and {self.batch_size}"
            )
        self.seed = seed
        self.recipe = recipe or DinomalyRecipe()
        self.device = resolve_device(settings.device)
        self.layers = target_layers(ARCHITECTURES[settings.teacher.variant].depth)  # ViT-g: no
        # TeacherConfig holds two layers: the first and last target blocks (all eight are
        # in `settings_dict`); it checks the input size and mode.
        self.teacher_config = replace(settings.teacher, layers=(self.layers[0], self.layers[-1]))
        self.teacher: Teacher | None = None
        self.decoder: DinomalyDecoder | None = None
        self.kernel = gaussian_kernel(self.recipe.gaussian_size, self.recipe.gaussian_sigma)
        self.info: dict[str, Any] = {}  # how the decoder was trained

    def fit(self, train_images: Sequence[Path], work_dir: Path) -> None:
        """Train bottleneck and decoder on defect-free images, or reload those in
        `work_dir` when trained on the same images with the same settings."""
        images = [Path(p) for p in train_images]
        if not images:
            raise InputError("Dinomaly needs at least one training image")
        work_dir = Path(work_dir)
        teacher = load_teacher(self.teacher_config.variant, self.teacher_config.weights)
        self.teacher = teacher.to(self.device)
        key = self._model_key(images)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # seeded, and the caller's RNG is kept
            torch.manual_seed(self.seed)
            self.decoder = self._new_decoder()
            if self._load(work_dir, key):
                return
            self._train(images)
        self._save(work_dir, key)

    def _train(self, images: Sequence[Path]) -> None:
        """Official initialisation, then `train_decoder` (dropout drawn from the RNG as
        seeded by `fit`, batches from the seeded `training_inputs`)."""
        assert self.decoder is not None and self.teacher is not None
        tic = time.perf_counter()
        init_official(self.decoder)
        inputs = training_inputs(images, self.teacher_config, self.batch_size, self.seed)
        with closing(prefetched(inputs)) as batches:
            log = train_decoder(
                self.decoder,
                self.teacher,
                batches,
                self.layers,
                self.recipe,
                self.iterations,
                self.device,
                self.settings.precision,
            )
        self.decoder.eval()
        self.info = {
            "n_train_images": len(images),
            "iterations_done": len(log.losses),
            "mean_batch_size": round(float(np.mean(log.batch_sizes)), 3),
            "final_loss": round(float(np.mean(log.losses[-LOSS_WINDOW:])), 6),
            "train_seconds": round(time.perf_counter() - tic, 3),
        }

    def _new_decoder(self) -> DinomalyDecoder:
        assert self.teacher is not None
        config = DecoderConfig(dim=self.teacher.embed_dim, num_heads=self.teacher.arch.num_heads)
        return DinomalyDecoder(config).to(self.device)

    def settings_dict(self) -> dict[str, Any]:
        """Everything besides the training images that the trained decoder depends on."""
        return {
            "teacher": self.teacher_config.variant,
            "weights": self.teacher_config.weights,
            **self.teacher_config.cache_description(),  # image_size, input_mode (tiles)
            "precision": self.settings.precision,
            "target_layers": list(self.layers),
            "iterations": self.iterations,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "recipe": asdict(self.recipe),
        }

    def _model_key(self, images: Sequence[Path]) -> str:
        """A digest of the settings, the teacher's weights and the exact training files."""
        assert self.teacher is not None
        files = cache_key(
            self.teacher_config, self.teacher.weights_id, self.settings.precision, images
        )
        return content_digest({"format": MODEL_FORMAT, "files": files, **self.settings_dict()})

    def _save(self, work_dir: Path, key: str) -> None:
        assert self.decoder is not None
        save_artefact(
            work_dir, WEIGHTS_FILE, self.decoder.state_dict(), MODEL_FORMAT, key, self.describe()
        )

    def _load(self, work_dir: Path, key: str) -> bool:
        """Load the decoder in `work_dir` if it was trained with `key`; False otherwise."""
        assert self.decoder is not None
        artefact = load_artefact(work_dir, WEIGHTS_FILE, MODEL_FORMAT, key)
        if artefact is None:
            return False
        try:
            self.decoder.load_state_dict(artefact.tensors, strict=True)
        except RuntimeError:  # another decoder's weights: train again
            return False
        self.decoder.eval()
        described = artefact.described
        self.info = {
            k: described[k]
            for k in (
                "n_train_images",
                "iterations_done",
                "mean_batch_size",
                "final_loss",
                "train_seconds",
            )
            if k in described
        }
        self.info["reloaded"] = True
        return True

    @property
    def record(self) -> RunDescription:
        """The fitted decoder's record: teacher, input settings, precision (no thresholds)."""
        if self.teacher is None:
            raise RuntimeError("Dinomaly.fit must run before its record is known")
        return RunDescription(
            method=self.name,
            teacher=self.teacher_config,
            weights_id=self.teacher.weights_id,
            embed_dim=self.teacher.embed_dim,
            precision=self.settings.precision,
        )

    def predict_maps(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """(H, W, 3) uint8 images -> maps at each image's own size and image scores, with
        Dinomaly's own map-to-image step and score."""
        if self.decoder is None or self.teacher is None:
            raise RuntimeError("Dinomaly.fit must run before predict_maps")
        return predict_images(
            self.patch_maps,
            images,
            self.teacher_config,
            self.device,
            to_maps=partial(to_full_resolution, kernel=self.kernel),
            score=partial(top_fraction_score, fraction=self.recipe.max_ratio),
        )

    @torch.inference_mode()
    def patch_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) inputs -> (B, h/14, w/14): 1 − cosine per group, mean over groups."""
        assert self.teacher is not None and self.decoder is not None
        grid = (x.shape[-2] // self.teacher.patch_size, x.shape[-1] // self.teacher.patch_size)
        first_patch = 1 + self.teacher.num_register_tokens
        encoded = encoder_layers(self.teacher, x, self.layers, self.settings.precision)
        decoded = self.decoder(encoded)
        maps = group_maps(
            grouped_patches(encoded, self.recipe.groups, first_patch, grid),
            grouped_patches(decoded, self.recipe.groups, first_patch, grid),
        )
        return maps.mean(dim=1)  # (B, G, h, w) -> (B, h, w)

    def describe(self) -> dict[str, Any]:
        """Settings, teacher identity and training statistics, for the results files."""
        weights_id = None if self.teacher is None else self.teacher.weights_id
        return {
            "method": self.name,
            **self.settings_dict(),
            "teacher_weights_id": weights_id,
            **self.info,
        }
