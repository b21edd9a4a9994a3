"""Teacher features of many images: batched extraction and the on-disk training cache.

Training runs the students for many epochs over the same frozen-teacher features, so
they are extracted once and kept on disk in fp16 (one memory-mapped array per layer),
keyed by everything that changes them: teacher variant and weights, layers, input
size, precision and the exact list of files (path, size, modification time). Fifty
epochs then cost one teacher pass per image plus the MLP work.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from l2bt.atomic import atomic_folder
from l2bt.config import TeacherConfig
from l2bt.data.image_io import read_image
from l2bt.preprocess import PadGeometry, preprocess
from l2bt.teacher import Teacher

CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """$L2BT_CACHE_DIR, else $XDG_CACHE_HOME/l2bt/features, else ~/.cache/l2bt/features."""
    if "L2BT_CACHE_DIR" in os.environ:
        return Path(os.environ["L2BT_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "l2bt" / "features"


def iter_inputs(
    images: Sequence[Path], size: int, batch_size: int, workers: int = 2
) -> Iterator[tuple[list[int], torch.Tensor, list[PadGeometry]]]:
    """Batches of (indices, (B, 3, size, size) inputs, pad geometries), read in threads."""

    def load(path: Path) -> tuple[torch.Tensor, PadGeometry]:
        return preprocess(read_image(path), size)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(images), batch_size):
            indices = list(range(start, min(start + batch_size, len(images))))
            loaded = list(pool.map(load, [images[i] for i in indices]))
            yield indices, torch.stack([x for x, _ in loaded]), [g for _, g in loaded]


@dataclass(frozen=True)
class TrainFeatures:
    """Cached fp16 features of the training images: two (N, h, w, D) memory-mapped arrays."""

    early: np.ndarray
    late: np.ndarray
    folder: Path

    def __len__(self) -> int:
        return self.early.shape[0]

    def rows(self, indices: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Images `indices` (sorted for disk locality) as float32 (n, h, w, D) tensors."""
        indices = np.sort(indices)
        early, late = (torch.from_numpy(array[indices]).to(device).float()  # fancy index: a copy
                       for array in (self.early, self.late))
        return early, late


def cache_key(
    config: TeacherConfig, weights_id: str, precision: str, images: Sequence[Path]
) -> str:
    """A digest of everything the cached features depend on."""
    files = []
    for path in images:
        stat = Path(path).stat()
        files.append([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns])
    description = {
        "format": CACHE_FORMAT, "variant": config.variant, "weights_id": weights_id,
        "layers": list(config.layers), "image_size": config.image_size,
        "precision": precision, "files": files,
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:24]


def _open_cached(folder: Path) -> TrainFeatures | None:
    if not (folder / "meta.json").is_file():
        return None
    early = np.load(folder / "early.npy", mmap_mode="r")
    late = np.load(folder / "late.npy", mmap_mode="r")
    return TrainFeatures(early=early, late=late, folder=folder)


def cached_train_features(
    teacher: Teacher,
    images: Sequence[Path],
    config: TeacherConfig,
    device: torch.device,
    precision: str = "fp32",
    cache_dir: Path | None = None,
    batch_size: int = 4,
    progress: bool = True,
) -> TrainFeatures:
    """The teacher's features of `images`, from the cache or extracted once into it.

    The cache entry is written to a temporary folder and renamed when complete, so an
    interrupted extraction never leaves a half-written entry behind.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / cache_key(config, teacher.weights_id, precision, images)
    cached = _open_cached(folder)
    if cached is not None:
        return cached
    grid = config.image_size // teacher.patch_size
    shape = (len(images), grid, grid, teacher.embed_dim)
    with atomic_folder(folder) as staging:
        early = np.lib.format.open_memmap(staging / "early.npy", "w+", np.float16, shape)
        late = np.lib.format.open_memmap(staging / "late.npy", "w+", np.float16, shape)
        batches = iter_inputs(images, config.image_size, batch_size)
        bar = tqdm(total=len(images), desc="teacher features", unit="img", disable=not progress)
        with bar:
            for indices, x, _ in batches:
                a, b = teacher.features(x.to(device), config.layers, precision)
                early[indices[0]:indices[-1] + 1] = a.cpu().numpy().astype(np.float16)
                late[indices[0]:indices[-1] + 1] = b.cpu().numpy().astype(np.float16)
                bar.update(len(indices))
        early.flush()
        late.flush()
        del early, late
        meta = {"n_images": len(images), "shape": list(shape), "images": [str(p) for p in images]}
        (staging / "meta.json").write_text(json.dumps(meta))
    cached = _open_cached(folder)
    assert cached is not None
    return cached
