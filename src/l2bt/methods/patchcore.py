"""PatchCore on the L2BT teacher: the strong training-free baseline.

Features: the same frozen teacher, input and two layers as L2BT; each layer averaged over
its 3×3 patch neighbourhood, L2-normalised, the two concatenated (so the Euclidean
distance is AnomalyDINO's cosine distance summed over the layers). Memory bank: the exact
k-center greedy coreset (`coreset.py`) of all training patches, `coreset_ratio` of them,
selected on 8-bit codes of a seeded 128-d projection, streamed from L2BT's fp16 feature
cache three times; kept in fp16, on disk and at fit time alike, so a reloaded bank
predicts exactly as a fresh one. Scores: a patch's distance to its nearest bank
descriptor (exact, `nearest.py`), then L2BT's map post-processing and top-0.1 % score.
Bounds for N training patches: 136 bytes per patch during selection, never N × N or
N × 2D; a bank of ratio · N × 2D floats; ratio · N² · 128 multiply-adds to select.
Rates: benchmarks/README.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from l2bt.anomaly_map import predict_images
from l2bt.config import content_digest
from l2bt.errors import InputError
from l2bt.features import TrainFeatures, cache_key, cached_train_features
from l2bt.methods.artefacts import load_artefact, save_artefact
from l2bt.methods.base import MethodSettings
from l2bt.methods.coreset import (
    Coreset,
    code_scale,
    greedy_coreset,
    quantize,
    random_projection,
)
from l2bt.methods.nearest import nearest_distances, squared_norms
from l2bt.prediction import Prediction
from l2bt.run import RunDescription
from l2bt.teacher import Teacher, load_teacher
from l2bt.utils.device import resolve_device

BANK_FORMAT = "l2bt-patchcore/2"  # 2: the coreset selected exactly on 8-bit codes
BANK_FILE = "memory_bank.safetensors"
PROJECTION_DIM = 128
IMAGES_PER_CHUNK = 8  # cached training images read at once while building the bank


def patch_descriptors(
    early: torch.Tensor, late: torch.Tensor, neighbourhood: int = 3
) -> torch.Tensor:
    """(B, h, w, D) features of two layers -> (B, h, w, 2D) descriptors.

    Each layer: mean over the neighbourhood × neighbourhood patches around each patch
    (only those inside the grid), then L2 normalisation; the two are concatenated.
    """
    joined = []
    for features in (early, late):
        grid = features.permute(0, 3, 1, 2)  # (B, h, w, D) -> (B, D, h, w)
        grid = F.avg_pool2d(
            grid, neighbourhood, stride=1, padding=neighbourhood // 2, count_include_pad=False
        )
        joined.append(F.normalize(grid.permute(0, 2, 3, 1), dim=-1))  # back to (B, h, w, D)
    return torch.cat(joined, dim=-1)


class PatchCore:
    """Memory bank of normal patch descriptors; anomaly = distance to the nearest one."""

    name = "patchcore"

    def __init__(
        self,
        settings: MethodSettings,
        layers: tuple[int, int] = (7, 11),
        coreset_ratio: float = 0.1,
        seed: int = 0,
        neighbourhood: int = 3,
        projection_dim: int = PROJECTION_DIM,
    ) -> None:
        if not 0 < coreset_ratio <= 1:
            raise InputError(f"PatchCore coreset ratio must be in (0, 1], got {coreset_ratio}")
        if neighbourhood < 1 or neighbourhood % 2 == 0:
            raise InputError(f"PatchCore neighbourhood must be odd and ≥ 1, got {neighbourhood}")
        self.settings = settings
        self.teacher_config = replace(settings.teacher, layers=(layers[0], layers[1]))
        self.coreset_ratio = coreset_ratio
        self.seed = seed
        self.neighbourhood = neighbourhood
        self.projection_dim = projection_dim
        self.device = resolve_device(settings.device)
        self.teacher: Teacher | None = None
        self.bank: torch.Tensor | None = None  # (M, 2D) float32, on self.device
        self.bank_squared_norms: torch.Tensor | None = None  # (M,)
        self.info: dict[str, Any] = {}  # how the bank was built

    # ---- fit ------------------------------------------------------------------------------

    def fit(self, train_images: Sequence[Path], work_dir: Path) -> None:
        """Build the memory bank from defect-free images, or reload the one in `work_dir`
        when it was built from the same images with the same settings."""
        images = [Path(p) for p in train_images]
        if not images:
            raise InputError("PatchCore needs at least one training image")
        work_dir = Path(work_dir)
        teacher = load_teacher(self.teacher_config.variant, self.teacher_config.weights)
        self.teacher = teacher.to(self.device)
        key = self._bank_key(images)
        if self._load(work_dir, key):
            return
        features = cached_train_features(
            self.teacher,
            images,
            self.teacher_config,
            self.device,
            self.settings.precision,
            None if self.settings.cache_dir is None else Path(self.settings.cache_dir),
        )
        tic = time.perf_counter()
        coreset = self._select(features)
        bank = self._gather(features, coreset.indices.sort().values)
        self._set_bank(bank.half().float())  # as stored, so reloads predict identically
        self.info = {
            "n_train_images": len(images),
            "n_train_patches": features.n_patches,
            "bank_size": int(bank.shape[0]),
            "covering_radius_projected": round(coreset.covering_radius, 6),
            "coreset_seconds": round(time.perf_counter() - tic, 3),
        }
        self._save(work_dir, key)

    def _select(self, features: TrainFeatures) -> Coreset:
        """k-center greedy over 8-bit codes of the projected descriptors of every training
        patch (exact arithmetic, `coreset.py`). Two streaming passes over the cache: the
        largest projected magnitude (the codes' scale), then the codes themselves, so the
        float projection never exists for all N patches at once."""
        projection = random_projection(2 * features.dim, self.projection_dim, self.seed)
        if projection is not None:
            projection = projection.to(self.device)

        def projected() -> Iterator[torch.Tensor]:
            for patches in self._patch_chunks(features):
                yield patches if projection is None else patches @ projection
                # (n, 2D) -> (n, p)

        scale = code_scale(max(float(rows.abs().max()) for rows in projected()))
        width = 2 * features.dim if projection is None else self.projection_dim
        codes = torch.empty(features.n_patches, width, dtype=torch.int8, device=self.device)
        offset = 0
        for rows in projected():
            codes[offset : offset + rows.shape[0]] = quantize(rows, scale)
            offset += rows.shape[0]
        size = max(1, round(self.coreset_ratio * features.n_patches))
        coreset = greedy_coreset(codes, size, self.seed)
        return Coreset(coreset.indices, coreset.radii * scale)  # radii in projected units

    def _patch_chunks(self, features: TrainFeatures) -> Iterator[torch.Tensor]:
        """Training descriptors, a few images at a time: (p, 2D) float32 each, in the
        order of the cache's rows (image after image, each grid row-major)."""
        for start in range(0, len(features), IMAGES_PER_CHUNK):
            chunk = []
            for index in range(start, min(start + IMAGES_PER_CHUNK, len(features))):
                early, late = features.image(index, self.device)  # (h, w, D) each
                descriptors = patch_descriptors(early[None], late[None], self.neighbourhood)
                chunk.append(descriptors.flatten(0, 2))  # (1, h, w, 2D) -> (h·w, 2D)
            yield torch.cat(chunk)

    def _gather(self, features: TrainFeatures, chosen: torch.Tensor) -> torch.Tensor:
        """Full descriptors of `chosen` (sorted flat patch indices), chunk by chunk."""
        kept, offset = [], 0
        chosen = chosen.to(self.device)
        for patches in self._patch_chunks(features):
            inside = chosen[(chosen >= offset) & (chosen < offset + patches.shape[0])]
            kept.append(patches[inside - offset])
            offset += patches.shape[0]
        return torch.cat(kept).contiguous()

    def _set_bank(self, bank: torch.Tensor) -> None:
        self.bank = bank.to(self.device, torch.float32).contiguous()
        self.bank_squared_norms = squared_norms(self.bank)

    # ---- persistence ----------------------------------------------------------------------

    def settings_dict(self) -> dict[str, Any]:
        """Everything besides the training images that the bank depends on."""
        return {
            "teacher": self.teacher_config.variant,
            "weights": self.teacher_config.weights,
            **self.teacher_config.cache_description(),
            "layers": list(self.teacher_config.layers),
            "neighbourhood": self.neighbourhood,
            "coreset_ratio": self.coreset_ratio,
            "projection_dim": self.projection_dim,
            "seed": self.seed,
            "precision": self.settings.precision,
        }

    def _bank_key(self, images: Sequence[Path]) -> str:
        """A digest of the settings, the teacher's weights and the exact training files."""
        assert self.teacher is not None
        features = cache_key(
            self.teacher_config, self.teacher.weights_id, self.settings.precision, images
        )
        return content_digest({"format": BANK_FORMAT, "features": features, **self.settings_dict()})

    def _save(self, work_dir: Path, key: str) -> None:
        assert self.bank is not None
        save_artefact(
            work_dir, BANK_FILE, {"bank": self.bank.half()}, BANK_FORMAT, key, self.describe()
        )

    def _load(self, work_dir: Path, key: str) -> bool:
        """Load the bank in `work_dir` if it was built with `key`; False otherwise."""
        artefact = load_artefact(work_dir, BANK_FILE, BANK_FORMAT, key)
        if artefact is None or "bank" not in artefact.tensors:
            return False
        self._set_bank(artefact.tensors["bank"])
        described = artefact.described
        self.info = {
            k: described[k]
            for k in (
                "n_train_images",
                "n_train_patches",
                "bank_size",
                "covering_radius_projected",
                "coreset_seconds",
            )
            if k in described
        }
        self.info["reloaded"] = True
        return True

    # ---- predict --------------------------------------------------------------------------

    @property
    def record(self) -> RunDescription:
        """The fitted bank's record: teacher, input settings, precision (no thresholds)."""
        if self.teacher is None:
            raise RuntimeError("PatchCore.fit must run before its record is known")
        return RunDescription(
            method=self.name,
            teacher=self.teacher_config,
            weights_id=self.teacher.weights_id,
            embed_dim=self.teacher.embed_dim,
            precision=self.settings.precision,
        )

    def predict_maps(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """(H, W, 3) uint8 images -> maps at each image's own size and image scores."""
        if self.bank is None or self.teacher is None:
            raise RuntimeError("PatchCore.fit must run before predict_maps")
        return predict_images(
            self.patch_maps,
            images,
            self.teacher_config,
            self.device,
        )

    @torch.inference_mode()
    def patch_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) inputs -> (B, h/14, w/14) distance to the nearest bank descriptor."""
        assert self.teacher is not None and self.bank is not None
        early, late = self.teacher.features(x, self.teacher_config.layers, self.settings.precision)
        descriptors = patch_descriptors(early, late, self.neighbourhood)  # (B, h, w, 2D)
        batch, h, w, dim = descriptors.shape
        distances = nearest_distances(
            descriptors.reshape(-1, dim),  # (B·h·w, 2D)
            self.bank,
            self.bank_squared_norms,
        )
        return distances.reshape(batch, h, w)  # (B·h·w,) -> (B, h, w)

    def describe(self) -> dict[str, Any]:
        """Settings, teacher identity and bank statistics, for the results files."""
        weights_id = None if self.teacher is None else self.teacher.weights_id
        return {
            "method": self.name,
            **self.settings_dict(),
            "teacher_weights_id": weights_id,
            **self.info,
        }
