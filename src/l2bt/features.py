"""Teacher features of many images: batched extraction and the on-disk training cache.

Training runs the students for many epochs over the same frozen-teacher features, so
they are extracted once and kept on disk in fp16, keyed by everything that changes
them: teacher variant and weights, layers, input size and mode (in tiles mode T, the
overlap and s), precision and the exact list of files (path, size, modification time).
Fifty epochs then cost one teacher pass per input plus the MLP work.

An input is an image, or in tiles mode one window of an image (image after image, each
image's windows row-major). Layout of a cache entry: `early.npy` and `late.npy`, each
(P, D) fp16 and memory-mapped, hold every patch of every input, input after input, each
grid in row-major order; `grids.npy` (N, 2) holds each input's patch grid. In `pad` and
`tiles` mode every grid is the same; in `aspect` mode grids follow the images' shapes, so
rows are addressed by per-input offsets rather than a fixed stride. Extraction batches at
most `batch_size` inputs of one shape, so memory is bounded by a batch of inputs and the
windows of `workers` images, whatever the image size. Size on disk: 2 · P · D · 2 bytes
(16 MiB per 1036 px image of ViT-B).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from l2bt.config import Precision, TeacherConfig, content_digest
from l2bt.data.image_io import image_size, read_image
from l2bt.preprocess import InputGeometry, group_indices, normalise, teacher_pixels
from l2bt.teacher import Teacher
from l2bt.utils.atomic import atomic_folder, remove_stale_leftovers
from l2bt.utils.device import to_host
from l2bt.utils.progress import progress_bar, tell_estimate

CACHE_FORMAT = 2


def default_cache_dir() -> Path:
    """$L2BT_CACHE_DIR, else $XDG_CACHE_HOME/l2bt/features, else ~/.cache/l2bt/features."""
    if "L2BT_CACHE_DIR" in os.environ:
        return Path(os.environ["L2BT_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "l2bt" / "features"


def input_geometries(images: Sequence[Path], config: TeacherConfig) -> list[InputGeometry]:
    """Each image's input geometry, from the file headers (no decoding)."""
    return [InputGeometry.of(config, *image_size(p)) for p in images]


def iter_inputs(
    images: Sequence[Path],
    geometries: Sequence[InputGeometry],
    batch_size: int,
    workers: int = 2,
    device: torch.device | None = None,
    bit_depth: int | None = None,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Batches of (input rows, (B, 3, h, w) inputs) of at most `batch_size` inputs sharing
    a shape, in order of each shape's first appearance. Rows number every image's inputs
    (its windows in tiles mode), image after image. `workers` images are read at a time,
    in threads, and kept as uint8; only a batch is ever copied (stacked and normalised),
    so memory is the inputs of at most `workers` + 1 images and one batch, normalised on
    `device` (default the CPU). Images of more than 8 bits are read as `bit_depth`-bit
    (None: as each file declares)."""
    first_rows = np.cumsum([0] + [g.n_inputs for g in geometries])  # (N + 1,)

    def load(index: int) -> np.ndarray:
        image = read_image(images[index], bit_depth=bit_depth)
        return teacher_pixels(image, geometries[index])  # (n, h, w, 3)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for indices in group_indices([g.input_shape for g in geometries]).values():
            queue: list[tuple[int, np.ndarray]] = []  # (row, (h, w, 3) input) not yielded
            for start in range(0, len(indices), workers):
                chunk = indices[start : start + workers]
                for index, x in zip(chunk, pool.map(load, chunk), strict=True):
                    queue += zip(range(first_rows[index], first_rows[index + 1]), x, strict=True)
                while len(queue) >= batch_size:
                    yield _batch(queue[:batch_size], device)
                    queue = queue[batch_size:]
            if queue:
                yield _batch(queue, device)


def _batch(
    queue: Sequence[tuple[int, np.ndarray]], device: torch.device | None
) -> tuple[list[int], torch.Tensor]:
    """(rows, the (B, 3, h, w) normalised inputs) of (row, (h, w, 3) uint8 input) pairs."""
    return [row for row, _ in queue], normalise(np.stack([x for _, x in queue]), device)


@dataclass(frozen=True)
class TrainFeatures:
    """Cached fp16 features of the training inputs (see the module docstring): the
    images, or in tiles mode their windows.

    `early`, `late`: (P, D) memory-mapped arrays, every patch of every input in order;
    `grids`: (N, 2) each input's patch grid (rows, columns).
    """

    early: np.ndarray
    late: np.ndarray
    grids: np.ndarray
    folder: Path
    offsets: np.ndarray = field(init=False)  # (N + 1,) first row of each input, then P

    def __post_init__(self) -> None:
        counts = self.grids[:, 0] * self.grids[:, 1]  # (N,) patches per input
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
        """Every patch of inputs `indices` (read in sorted order, for disk locality), as two
        float32 (p, D) tensors."""
        rows = [slice(self.offsets[i], self.offsets[i + 1]) for i in np.sort(indices)]
        early, late = (
            torch.from_numpy(np.concatenate([array[r] for r in rows])).to(device).float()
            for array in (self.early, self.late)
        )
        return early, late

    def image(self, index: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """One input's features as two float32 (h, w, D) grids."""
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
    config: TeacherConfig,
    weights_id: str,
    precision: Precision,
    images: Sequence[Path],
    bit_depth: int | None = None,
) -> str:
    """A digest of everything the cached features depend on (the bit depth only when
    set, so runs of files read at their declared depth keep their keys)."""
    files = []
    for path in images:
        stat = Path(path).stat()
        files.append([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns])
    description = {
        "format": CACHE_FORMAT,
        "variant": config.variant,
        "weights_id": weights_id,
        "layers": list(config.layers),
        **config.cache_description(),
        "precision": precision,
        "files": files,
    }
    if bit_depth is not None:  # images read as `bit_depth`-bit
        description["bit_depth"] = bit_depth
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
    precision: Precision = "fp32",
    cache_dir: Path | None = None,
    batch_size: int = 4,
    bit_depth: int | None = None,
) -> TrainFeatures:
    """The teacher's features of `images` (read as `bit_depth`-bit when they hold more than
    8 bits; None: as each file declares), from the cache or extracted once into it.

    The cache entry is written to a temporary folder and renamed when complete, so an
    interrupted extraction never leaves a half-written entry behind.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    remove_stale_leftovers(root)  # entries whose extraction was killed
    folder = root / cache_key(config, teacher.weights_id, precision, images, bit_depth)
    cached = _open_cached(folder)
    if cached is not None:
        return cached
    geometries = input_geometries(images, config)
    grids = np.array(
        [g.grid for g in geometries for _ in range(g.n_inputs)], dtype=np.int64
    ).reshape(-1, 2)  # (N inputs, 2)
    with atomic_folder(folder) as staging:
        batches = iter_inputs(images, geometries, batch_size, device=device, bit_depth=bit_depth)
        _extract(teacher, batches, grids, config.layers, precision, staging)
        np.save(staging / "grids.npy", grids)
        meta = {
            "n_images": len(images),
            "n_inputs": len(grids),
            "n_patches": int((grids[:, 0] * grids[:, 1]).sum()),
            "dim": teacher.embed_dim,
            "images": [str(p) for p in images],
        }
        (staging / "meta.json").write_text(json.dumps(meta))
    cached = _open_cached(folder)
    assert cached is not None
    return cached


def _extract(
    teacher: Teacher,
    batches: Iterator[tuple[list[int], torch.Tensor]],
    grids: np.ndarray,
    layers: tuple[int, int],
    precision: Precision,
    staging: Path,
) -> None:
    """Every input's features of both layers into `staging/{early,late}.npy` (fp16)."""
    offsets = np.concatenate([[0], np.cumsum(grids[:, 0] * grids[:, 1])])  # (N + 1,)
    shape = (int(offsets[-1]), teacher.embed_dim)
    early = np.lib.format.open_memmap(staging / "early.npy", "w+", np.float16, shape)
    late = np.lib.format.open_memmap(staging / "late.npy", "w+", np.float16, shape)
    start = time.perf_counter()
    with progress_bar(total=len(grids), desc="teacher features", unit="input") as bar:
        for indices, x in batches:
            a, b = teacher.features(x, layers, precision)
            for row, i in enumerate(indices):
                rows = slice(offsets[i], offsets[i + 1])
                to_host(a[row].flatten(0, 1).half(), out=early[rows])  # (h, w, D) -> (h·w, D)
                to_host(b[row].flatten(0, 1).half(), out=late[rows])
            if bar.n == 0:
                elapsed = time.perf_counter() - start
                tell_estimate("teacher features", len(indices), len(grids), elapsed)
            bar.update(len(indices))
    early.flush()
    late.flush()
