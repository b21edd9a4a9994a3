"""Teacher features of many images: batched extraction and the on-disk training cache.

Training runs the students for many epochs over the same frozen-teacher features, so
they are extracted once and kept on disk in fp16, keyed by everything that changes
them: teacher variant and weights, layers, input size and mode, precision and the exact
list of files (path, size, modification time). Fifty epochs then cost one teacher pass
per image plus the MLP work.

Layout of a cache entry: `early.npy` and `late.npy`, each (P, D) fp16 and memory-mapped,
hold every patch of every image, image after image, each image's grid in row-major
order; `grids.npy` (N, 2) holds each image's patch grid. In `pad` mode every grid is
(S/14)²; in `aspect` mode grids follow the images' shapes, so rows are addressed by
per-image offsets rather than a fixed stride. Extraction batches images that share an
input shape (all of them in `pad` mode). Size on disk: 2 · P · D · 2 bytes (16 MiB per
1036 px image of ViT-B).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from l2bt.atomic import atomic_folder
from l2bt.config import TeacherConfig, content_digest
from l2bt.data.image_io import current_bit_depth, image_size, read_image
from l2bt.preprocess import InputGeometry, group_indices, preprocess
from l2bt.teacher import Teacher

CACHE_FORMAT = 2


def default_cache_dir() -> Path:
    """$L2BT_CACHE_DIR, else $XDG_CACHE_HOME/l2bt/features, else ~/.cache/l2bt/features."""
    if "L2BT_CACHE_DIR" in os.environ:
        return Path(os.environ["L2BT_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "l2bt" / "features"


def input_geometries(images: Sequence[Path], config: TeacherConfig) -> list[InputGeometry]:
    """Each image's input geometry, from the file headers (no decoding)."""
    return [
        InputGeometry.for_mode(config.input_mode, *image_size(p), config.image_size) for p in images
    ]


def shape_batches(geometries: Sequence[InputGeometry], batch_size: int) -> list[list[int]]:
    """Indices of images that share an input shape, at most `batch_size` per batch, in
    order of each shape's first appearance (one shape, hence plain batches, in pad mode)."""
    groups = group_indices([geometry.input_shape for geometry in geometries])
    return [
        indices[start : start + batch_size]
        for indices in groups.values()
        for start in range(0, len(indices), batch_size)
    ]


def iter_inputs(
    images: Sequence[Path],
    config: TeacherConfig,
    geometries: Sequence[InputGeometry],
    batch_size: int,
    workers: int = 2,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Batches of (indices, (B, 3, h, w) inputs) of images sharing a shape, read in threads."""

    def load(path: Path) -> torch.Tensor:
        return preprocess(read_image(path), config.image_size, config.input_mode)[0]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for indices in shape_batches(geometries, batch_size):
            yield indices, torch.stack(list(pool.map(load, [images[i] for i in indices])))


@dataclass(frozen=True)
class TrainFeatures:
    """Cached fp16 features of the training images (see the module docstring).

    `early`, `late`: (P, D) memory-mapped arrays, every patch of every image in order;
    `grids`: (N, 2) each image's patch grid (rows, columns).
    """

    early: np.ndarray
    late: np.ndarray
    grids: np.ndarray
    folder: Path
    offsets: np.ndarray = field(init=False)  # (N + 1,) first row of each image, then P

    def __post_init__(self) -> None:
        counts = self.grids[:, 0] * self.grids[:, 1]  # (N,) patches per image
        object.__setattr__(self, "offsets", np.concatenate([[0], np.cumsum(counts)]))

    def __len__(self) -> int:
        return self.grids.shape[0]

    @property
    def n_patches(self) -> int:
        return int(self.offsets[-1])

    @property
    def dim(self) -> int:
        return self.early.shape[1]

    def patches(
        self, indices: np.ndarray, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every patch of images `indices` (read in sorted order, for disk locality), as two
        float32 (p, D) tensors."""
        rows = [slice(self.offsets[i], self.offsets[i + 1]) for i in np.sort(indices)]
        early, late = (
            torch.from_numpy(np.concatenate([array[r] for r in rows])).to(device).float()
            for array in (self.early, self.late)
        )
        return early, late

    def image(self, index: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """One image's features as two float32 (h, w, D) grids."""
        rows = slice(self.offsets[index], self.offsets[index + 1])
        h, w = (int(v) for v in self.grids[index])
        early, late = (
            torch.from_numpy(np.array(array[rows]))
            .to(device)
            .float()
            .reshape(h, w, -1)  # (h·w, D) -> (h, w, D)
            for array in (self.early, self.late)
        )
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
        "format": CACHE_FORMAT,
        "variant": config.variant,
        "weights_id": weights_id,
        "layers": list(config.layers),
        "image_size": config.image_size,
        "input_mode": config.input_mode,
        "precision": precision,
        "files": files,
    }
    if (depth := current_bit_depth()) is not None:  # images read as `depth`-bit
        description["bit_depth"] = depth
    return content_digest(description)


def _open_cached(folder: Path) -> TrainFeatures | None:
    if not (folder / "meta.json").is_file():
        return None
    early = np.load(folder / "early.npy", mmap_mode="r")
    late = np.load(folder / "late.npy", mmap_mode="r")
    return TrainFeatures(early=early, late=late, grids=np.load(folder / "grids.npy"), folder=folder)


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
    geometries = input_geometries(images, config)
    grids = np.array([g.grid for g in geometries], dtype=np.int64).reshape(-1, 2)  # (N, 2)
    offsets = np.concatenate([[0], np.cumsum(grids[:, 0] * grids[:, 1])])  # (N + 1,)
    shape = (int(offsets[-1]), teacher.embed_dim)
    with atomic_folder(folder) as staging:
        early = np.lib.format.open_memmap(staging / "early.npy", "w+", np.float16, shape)
        late = np.lib.format.open_memmap(staging / "late.npy", "w+", np.float16, shape)
        bar = tqdm(total=len(images), desc="teacher features", unit="img", disable=not progress)
        with bar:
            for indices, x in iter_inputs(images, config, geometries, batch_size):
                a, b = teacher.features(x.to(device), config.layers, precision)
                for row, i in enumerate(indices):
                    rows = slice(offsets[i], offsets[i + 1])
                    early[rows] = a[row].flatten(0, 1).cpu().numpy()  # (h, w, D) -> (h·w, D)
                    late[rows] = b[row].flatten(0, 1).cpu().numpy()
                bar.update(len(indices))
        early.flush()
        late.flush()
        del early, late
        np.save(staging / "grids.npy", grids)
        meta = {
            "n_images": len(images),
            "n_patches": shape[0],
            "dim": shape[1],
            "images": [str(p) for p in images],
        }
        (staging / "meta.json").write_text(json.dumps(meta))
    cached = _open_cached(folder)
    assert cached is not None
    return cached
