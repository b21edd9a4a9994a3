"""Small builders shared by tests: tiny images and MVTec-layout trees."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from l2bt.config import TeacherConfig, TileSettings
from l2bt.data import image_io, load_category

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def textured_image(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth random texture (H, W, 3) uint8, so that a random teacher sees structure."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 128 + 60 * np.sin(xx / 5.0 + rng.random() * 6) * np.cos(yy / 7.0)
    noise = rng.normal(0, 8, (height, width))
    gray = np.clip(base + noise, 0, 255)
    return np.repeat(gray[:, :, None], 3, axis=2).astype(np.uint8)


def write_mvtec_tree(
    root: Path, category: str = "toy", sizes=((40, 60), (56, 42), (45, 45)), n_train: int = 6
) -> Path:
    """A tiny MVTec AD tree: train/good, test/good, test/spot with masks."""
    base = root / category
    for sub in ("train/good", "test/good", "test/spot", "ground_truth/spot"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_train):
        h, w = sizes[i % len(sizes)]
        Image.fromarray(textured_image(h, w, i)).save(base / "train/good" / f"{i:03d}.png")
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(textured_image(h, w, 100 + i)).save(base / "test/good" / f"{i:03d}.png")
        image = textured_image(h, w, 200 + i)
        mask = np.zeros((h, w), np.uint8)
        mask[h // 3 : h // 3 + 6, w // 2 : w // 2 + 5] = 255
        image[mask > 0] = 255
        Image.fromarray(image).save(base / "test/spot" / f"{i:03d}.png")
        Image.fromarray(mask).save(base / "ground_truth/spot" / f"{i:03d}_mask.png")
    return base


# The small random teacher every CLI test uses (tests never download weights).
TINY_TEACHER = ["--teacher", "dinov2_vits14", "--weights", "random", "--image-size", "56"]


def one_error_line(capsys) -> str:
    """The CLI's error output: exactly one plain line, no traceback."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


@contextmanager
def teacher_loaded_once(module) -> Iterator[dict]:
    """`module.load_teacher` memoised: fits in one test module share one frozen teacher
    (random ViT-S initialisation takes seconds), which is safe as it never changes."""
    original, teachers = module.load_teacher, {}

    def load_once(variant, weights=None):
        if (variant, weights) not in teachers:
            teachers[variant, weights] = original(variant, weights)
        return teachers[variant, weights]

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(module, "load_teacher", load_once)
        yield teachers


def fit_toy(data, out, *extra) -> int:
    """`l2bt fit` of the tiny teacher for 1 epoch on category "toy" of `data` (a tree from
    `write_mvtec_tree`); `extra` flags are appended."""
    from l2bt.cli import main

    return main(
        [
            "fit",
            "--data",
            str(data),
            "--category",
            "toy",
            "--out",
            str(out),
            *TINY_TEACHER,
            "--epochs",
            "1",
            *extra,
        ]
    )


EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 20 20\n"
    b"newpath 0 0 moveto 20 20 lineto stroke\nshowpage\n%%EOF\n"
)


def thin_png(height: int, width: int) -> bytes:
    image = np.zeros((height, width, 3), np.uint8)
    image[:, ::7] = 200
    return encode(image)


class DecodeSpy:
    """`load_image` that counts its calls (decoding any pixel goes through it)."""

    def __init__(self) -> None:
        self.calls = 0
        self.load_image = image_io.load_image

    def __call__(self, image, path=None):
        self.calls += 1
        return self.load_image(image, path)


FORMATS_LINE = "not a supported image format (PNG, JPEG, TIFF, BMP, WebP)"


def encode(image: np.ndarray | Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buffer, fmt)
    return buffer.getvalue()


def write_maps(data, maps, noise=0.0, seed=0):
    """Maps that light up the ground truth (plus noise), in the SPEC §5 layout."""
    rng = np.random.default_rng(seed)
    split = load_category(data, "toy")
    for s in split.test:
        w, h = Image.open(s.image).size
        target = np.zeros((h, w), np.float32)
        if s.mask is not None:
            target = (np.asarray(Image.open(s.mask)) > 127).astype(np.float32)
        path = maps / "toy" / f"{s.key}.tiff"
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, target + noise * rng.random((h, w)).astype(np.float32))
    return split


def save16(path, values):
    Image.fromarray(np.asarray(values, dtype=np.uint16)).save(path)
    return path


def with_tiles(config, **changes):
    """`config` with some tile settings changed."""
    return replace(config, tiles=replace(config.tiles, **changes))


SMALL_TILES = TeacherConfig(
    "dinov2_vits14", "random", 56, input_mode="tiles", tiles=TileSettings(size=28, overlap=7)
)


def described_mode(described):
    """The input mode in a method's description (l2bt nests its run's config)."""
    return described.get("input_mode") or described["config"]["teacher"]["input_mode"]
