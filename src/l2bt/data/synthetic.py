"""A synthetic high-resolution data set with exact masks, for demos and small-defect tests.

Each image is a procedural surface (brushed-metal streaks over low-frequency shading and
fine grain) of its own seed; defective test images get one to three defects of four
kinds: scratches (thin lines), spots (tiny discs), cracks (random-walk polylines) and
stains (soft blobs). Their areas range from a few pixels to tens of thousands.

The mask of an image is exactly the set of pixels its defects changed: every defect
moves each of its pixels by at least `MIN_CONTRAST` grey levels (darker on bright
ground, brighter on dark ground), and nothing else changes. Output is deterministic by
seed and written in the MVTec AD layout.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from l2bt.errors import InputError
from l2bt.utils.atomic import atomic_folder
from l2bt.utils.progress import progress_bar

DEFECT_TYPES = ("scratch", "spot", "crack", "stain")
MIN_CONTRAST = 24  # grey levels every defect pixel moves, at least

Shape = tuple[int, int]  # (height, width)


MIN_SIZE = 64  # the long side of the smallest images: room for every kind of defect


@dataclass(frozen=True)
class SyntheticConfig:
    size: int = 2048  # long side in pixels; images are size × 3/4·size (landscape)
    seed: int = 0
    category: str = "synthetic"
    n_train: int = 20
    n_test_good: int = 5
    n_test_defective: int = 16

    def __post_init__(self) -> None:
        if self.size < MIN_SIZE:
            raise InputError(f"--size must be at least {MIN_SIZE}, got {self.size}")
        counts = (self.n_train, self.n_test_good, self.n_test_defective)
        if min(counts) < 0:
            raise InputError(f"image counts must be 0 or more, got {', '.join(map(str, counts))}")

    @property
    def shape(self) -> tuple[int, int]:
        return (self.size * 3) // 4, self.size


def surface(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A defect-free (H, W) uint8 surface: shading, brushed streaks and grain."""
    height, width = shape
    coarse = rng.normal(0.0, 1.0, (height // 128 + 2, width // 128 + 2))
    shading = ndimage.zoom(coarse, 128, order=3)[:height, :width]
    streaks = ndimage.gaussian_filter1d(rng.normal(0.0, 1.0, (height, width // 8 + 1)), 6, 1)
    streaks = np.repeat(streaks, 8, axis=1)[:, :width]  # (H, W/8) -> (H, W): brushed along x
    grain = rng.normal(0.0, 1.0, shape)
    value = 128 + 14 * shading + 10 * streaks / max(streaks.std(), 1e-6) + 4 * grain
    return np.clip(value, 40, 215).astype(np.uint8)  # headroom for defects both ways


def _disc(shape: Shape, cy: float, cx: float, radius: float) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


def _polyline(shape: Shape, points: np.ndarray, width: float) -> np.ndarray:
    """Pixels within width/2 of a polyline through (N, 2) points (row, col)."""
    mask = np.zeros(shape, bool)
    for (y0, x0), (y1, x1) in itertools.pairwise(points):
        steps = int(max(abs(y1 - y0), abs(x1 - x0)) * 2) + 1
        rows = np.round(np.linspace(y0, y1, steps)).astype(int)
        cols = np.round(np.linspace(x0, x1, steps)).astype(int)
        keep = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
        mask[rows[keep], cols[keep]] = True
    if width > 1.5:
        mask = ndimage.binary_dilation(mask, iterations=round(width / 2))
    return mask


def scratch(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    length = np.exp(rng.uniform(np.log(15), np.log(0.4 * shape[1])))
    angle = rng.uniform(0, np.pi)
    cy, cx = rng.uniform(0.1, 0.9) * shape[0], rng.uniform(0.1, 0.9) * shape[1]
    dy, dx = np.sin(angle) * length / 2, np.cos(angle) * length / 2
    return _polyline(
        shape, np.array([[cy - dy, cx - dx], [cy + dy, cx + dx]]), width=rng.choice([1.0, 2.0, 3.0])
    )


def spot(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    radius = np.exp(rng.uniform(np.log(0.8), np.log(7)))
    cy, cx = int(rng.uniform(0.05, 0.95) * shape[0]), int(rng.uniform(0.05, 0.95) * shape[1])
    return _disc(shape, cy, cx, radius)  # an integer centre: at least one pixel


def crack(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    n = int(rng.integers(6, 30))
    steps = rng.normal(0.0, 1.0, (n, 2)) * rng.uniform(4, 20)
    start = np.array([rng.uniform(0.1, 0.9) * shape[0], rng.uniform(0.1, 0.9) * shape[1]])
    return _polyline(shape, start + np.cumsum(steps, axis=0), width=rng.choice([1.0, 2.0]))


def stain(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    radius = np.exp(rng.uniform(np.log(12), np.log(0.12 * shape[1])))
    cy, cx = rng.uniform(0.15, 0.85) * shape[0], rng.uniform(0.15, 0.85) * shape[1]
    box = int(radius * 1.6) + 2
    window = (
        slice(max(int(cy) - box, 0), int(cy) + box),
        slice(max(int(cx) - box, 0), int(cx) + box),
    )
    local = np.zeros((window[0].stop - window[0].start, window[1].stop - window[1].start))
    noise = ndimage.gaussian_filter(rng.normal(0, 1, local.shape), radius / 4)
    yy, xx = np.ogrid[: local.shape[0], : local.shape[1]]
    distance = np.hypot(yy + window[0].start - cy, xx + window[1].start - cx) / radius
    blob = distance + 0.2 * noise / max(noise.std(), 1e-6) < 1.0  # a ragged edge
    mask = np.zeros(shape, bool)
    mask[window] = blob[: mask[window].shape[0], : mask[window].shape[1]]
    return mask


SHAPES: dict[str, Callable[[tuple[int, int], np.random.Generator], np.ndarray]] = {
    "scratch": scratch,
    "spot": spot,
    "crack": crack,
    "stain": stain,
}


def apply_defect(image: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> None:
    """Darken (on bright ground) or brighten `region` by at least MIN_CONTRAST, in place.

    Surfaces lie in 40..215, so even after clipping to 0..255 every pixel moves by at
    least min(MIN_CONTRAST, 40) grey levels: the mask is exactly what changed.
    """
    strength = rng.uniform(MIN_CONTRAST, 70)
    values = image[region].astype(np.float32)
    sign = -1.0 if values.mean() > 127 else 1.0
    image[region] = np.clip(values + sign * strength, 0, 255).astype(np.uint8)


def defective_image(
    clean: np.ndarray, kind: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A copy of `clean` with 1–3 defects of `kind`, and its exact mask."""
    image = clean.copy()
    mask = np.zeros(clean.shape, bool)
    for _ in range(int(rng.integers(1, 4))):
        region = SHAPES[kind](clean.shape, rng) & ~mask  # never move a pixel twice
        while not region.any():  # e.g. a crack that wandered off the image: draw again
            region = SHAPES[kind](clean.shape, rng) & ~mask
        apply_defect(image, region, rng)
        mask |= region
    return image, mask


def _rng(config: SyntheticConfig, split: str, index: int) -> np.random.Generator:
    key = {"train": 0, "good": 1, "defective": 2}[split]
    return np.random.default_rng([config.seed, key, index])


def clean_surface(config: SyntheticConfig, split: str, index: int) -> np.ndarray:
    """The defect-free surface behind an image (what its defects were painted on)."""
    return surface(config.shape, _rng(config, split, index))


def _save_rgb(gray: np.ndarray, path: Path) -> None:
    Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2)).save(path, compress_level=1)


def write_synthetic(out: str | Path, config: SyntheticConfig, overwrite: bool = False) -> Path:
    """Write `<out>/<category>/{train/good, test/<kind>, ground_truth/<kind>}` atomically."""
    out = Path(out)
    target = out / config.category
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise InputError("output folder exists and is not empty (use --overwrite)", target)
    total = config.n_train + config.n_test_good + config.n_test_defective
    bar = progress_bar(total=total, desc="synthetic images", unit="img")
    with bar, atomic_folder(target) as staging:
        (staging / "train/good").mkdir(parents=True)
        (staging / "test/good").mkdir(parents=True)
        for i in range(config.n_train):
            _save_rgb(clean_surface(config, "train", i), staging / f"train/good/{i:03d}.png")
            bar.update(1)
        for i in range(config.n_test_good):
            _save_rgb(clean_surface(config, "good", i), staging / f"test/good/{i:03d}.png")
            bar.update(1)
        for i in range(config.n_test_defective):
            kind = DEFECT_TYPES[i % len(DEFECT_TYPES)]
            clean = clean_surface(config, "defective", i)
            defects_rng = np.random.default_rng([config.seed, 3, i])
            image, mask = defective_image(clean, kind, defects_rng)
            for folder in (f"test/{kind}", f"ground_truth/{kind}"):
                (staging / folder).mkdir(parents=True, exist_ok=True)
            _save_rgb(image, staging / f"test/{kind}/{i:03d}.png")
            Image.fromarray(mask.astype(np.uint8) * 255).save(
                staging / f"ground_truth/{kind}/{i:03d}_mask.png"
            )
            bar.update(1)
    return target
