"""PatchCore on the L2BT teacher: the strong training-free baseline.

Features: the same frozen teacher, input size and two layers as L2BT (default 7 and 11),
each averaged over its 3×3 patch neighbourhood (PatchCore's local aggregation), L2
normalised and concatenated, so a patch is a 2·D vector. The training images' features
come from L2BT's on-disk cache, so both methods share one teacher pass.

Memory bank: greedy k-center coreset (PatchCore) of all training patches, selected on a
seeded Gaussian random projection to 128 dimensions. The cached features are streamed
twice, a few images at a time: once to project every patch, once to gather the chosen
ones. Memory: N × 128 projected floats and one running distance per patch during
selection, then ratio × N × 2·D floats for the bank; the full N × 2·D set never exists.
Cost: ratio · N² · 128 multiply-adds, the known price of PatchCore.

Scores: a patch's anomaly is its Euclidean distance to the nearest coreset patch
(exact, in chunks); the patch map is upsampled, smoothed and cropped exactly as L2BT's,
so the two differ only in how patches are scored.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional as F
from tqdm.auto import tqdm

from l2bt.anomaly_map import image_score, to_image_maps
from l2bt.config import TeacherConfig
from l2bt.features import cached_train_features, teacher_features
from l2bt.methods.base import MethodSettings
from l2bt.model import Prediction, resolve_device
from l2bt.preprocess import preprocess
from l2bt.teacher import load_teacher

PROJECTION_DIM = 128


def aggregate(early: torch.Tensor, late: torch.Tensor) -> torch.Tensor:
    """(B, h, w, D) × 2 -> (B, h, w, 2D): 3×3 neighbourhood means, L2-normalised, joined."""
    joined = []
    for features in (early, late):
        grid = features.permute(0, 3, 1, 2)  # (B, h, w, D) -> (B, D, h, w)
        grid = F.avg_pool2d(grid, 3, stride=1, padding=1, count_include_pad=False)
        joined.append(F.normalize(grid.permute(0, 2, 3, 1), dim=-1))  # back to (B, h, w, D)
    return torch.cat(joined, dim=-1)


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, d), (m, d) -> (n, m) squared Euclidean distances, clamped at 0."""
    return (a.square().sum(1, keepdim=True) + b.square().sum(1)[None] - 2.0 * a @ b.T).clamp_(0)


def greedy_coreset(points: torch.Tensor, size: int, seed: int = 0) -> torch.Tensor:
    """Indices of a k-center greedy coreset of (N, d) points, the first pick seeded.

    Each step adds the point farthest from the coreset so far (the first one on ties),
    keeping one running minimum distance per point: O(N) memory besides the points.
    """
    n = points.shape[0]
    size = max(1, min(size, n))
    generator = torch.Generator().manual_seed(seed)
    first = int(torch.randint(n, (1,), generator=generator))
    chosen = torch.empty(size, dtype=torch.long)
    chosen[0] = first
    nearest = squared_distances(points, points[first:first + 1])[:, 0]
    for step in range(1, size):
        pick = int(torch.argmax(nearest))
        chosen[step] = pick
        nearest = torch.minimum(nearest, squared_distances(points, points[pick:pick + 1])[:, 0])
    return chosen


def nearest_distances(queries: torch.Tensor, bank: torch.Tensor, chunk: int = 4096
                      ) -> torch.Tensor:
    """(n, d) queries -> (n,) Euclidean distance to the nearest of (m, d) bank rows, exact."""
    best = torch.full((queries.shape[0],), float("inf"), dtype=queries.dtype,
                      device=queries.device)
    for start in range(0, bank.shape[0], chunk):
        block = squared_distances(queries, bank[start:start + chunk])
        best = torch.minimum(best, block.min(dim=1).values)
    return best.sqrt()


def random_projection(dim: int, seed: int) -> torch.Tensor:
    """A seeded (dim, 128) Gaussian projection, scaled to keep distances on average."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(dim, PROJECTION_DIM, generator=generator) / PROJECTION_DIM**0.5


class PatchCore:
    """Memory bank of teacher patch features; anomaly = distance to the nearest normal patch."""

    name = "patchcore"

    def __init__(self, settings: MethodSettings, layers: tuple[int, int] = (7, 11),
                 coreset_ratio: float = 0.1, seed: int = 0) -> None:
        self.settings = settings
        self.teacher_config = TeacherConfig(settings.teacher, settings.weights,
                                            settings.image_size, layers)
        self.coreset_ratio = coreset_ratio
        self.seed = seed
        self.device = resolve_device(settings.device)
        self.teacher = None
        self.bank: torch.Tensor | None = None  # (M, 2D)
        self.n_train_patches = 0

    def _settings_key(self) -> dict[str, Any]:
        return {"teacher": self.teacher_config.variant, "weights": self.teacher_config.weights,
                "image_size": self.teacher_config.image_size,
                "layers": list(self.teacher_config.layers),
                "coreset_ratio": self.coreset_ratio, "seed": self.seed,
                "precision": self.settings.precision}

    def fit(self, train_images: Sequence[Path], work_dir: Path, progress: bool) -> None:
        self.teacher = load_teacher(self.teacher_config.variant, self.teacher_config.weights)
        self.teacher.to(self.device)
        saved = work_dir / "memory_bank.safetensors"
        config_path = work_dir / "config.json"
        if saved.is_file() and config_path.is_file():
            described = json.loads(config_path.read_text())
            if described.get("settings") == self._settings_key():
                self.bank = load_file(str(saved))["bank"].to(self.device)
                self.n_train_patches = described["n_train_patches"]
                return
        features = cached_train_features(
            self.teacher, train_images, self.teacher_config, self.device,
            self.settings.precision,
            None if self.settings.cache_dir is None else Path(self.settings.cache_dir),
            progress=progress)
        projection = random_projection(2 * self.teacher.embed_dim, self.seed).to(self.device)
        projected = torch.cat([patches @ projection for patches in self._patch_chunks(features)])
        self.n_train_patches = projected.shape[0]
        size = max(1, round(self.coreset_ratio * self.n_train_patches))
        with tqdm(total=1, desc=f"coreset {size} of {self.n_train_patches}",
                  disable=not progress):
            chosen = greedy_coreset(projected, size, self.seed)
        del projected
        self.bank = self._gather(features, chosen.sort().values)
        work_dir.mkdir(parents=True, exist_ok=True)
        save_file({"bank": self.bank.cpu()}, str(saved))
        config_path.write_text(json.dumps({"settings": self._settings_key(),
                                           "n_train_patches": self.n_train_patches}, indent=2))

    def _patch_chunks(self, features, images_per_chunk: int = 8):
        """Aggregated training patches, a few images at a time: (n·h·w, 2D) float32 each."""
        for start in range(0, len(features), images_per_chunk):
            indices = np.arange(start, min(start + images_per_chunk, len(features)))
            early, late = features.rows(indices, self.device)
            yield aggregate(early, late).flatten(0, 2)  # (n, h, w, 2D) -> (n·h·w, 2D)

    def _gather(self, features, chosen: torch.Tensor) -> torch.Tensor:
        """Full-dimensional rows `chosen` (sorted global patch indices), chunk by chunk."""
        kept, offset = [], 0
        chosen = chosen.to(self.device)
        for patches in self._patch_chunks(features):
            inside = chosen[(chosen >= offset) & (chosen < offset + patches.shape[0])]
            kept.append(patches[inside - offset])
            offset += patches.shape[0]
        return torch.cat(kept).contiguous()

    @torch.inference_mode()
    def predict_batch(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        assert self.bank is not None and self.teacher is not None, "fit first"
        inputs, geometries = zip(*(preprocess(im, self.teacher_config.image_size)
                                   for im in images), strict=True)
        early, late = teacher_features(self.teacher, torch.stack(inputs).to(self.device),
                                       self.teacher_config.layers, self.settings.precision)
        patches = aggregate(early, late)  # (B, h, w, 2D)
        batch, h, w, dim = patches.shape
        distances = nearest_distances(patches.reshape(-1, dim), self.bank)
        patch_maps = distances.reshape(batch, h, w)  # (B·h·w,) -> (B, h, w)
        predictions = []
        for i, geometry in enumerate(geometries):
            anomaly_map = to_image_maps(patch_maps[i:i + 1], geometry)[0]
            predictions.append(Prediction(anomaly_map, image_score(anomaly_map)))
        return predictions

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, **self._settings_key(),
                "bank_size": None if self.bank is None else int(self.bank.shape[0]),
                "n_train_patches": self.n_train_patches}
