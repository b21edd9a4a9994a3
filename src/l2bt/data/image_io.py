"""Reading images and masks into plain arrays, with errors that name the file."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from l2bt.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".JPG", ".PNG")

# PIL refuses very large images by default; 5 MP industrial images are far below this.
Image.MAX_IMAGE_PIXELS = 300_000_000


def is_image_file(path: Path) -> bool:
    """An image by its suffix; hidden files (".name", e.g. macOS "._" forks and l2bt's own
    temporaries) are not images."""
    return (path.is_file() and not path.name.startswith(".")
            and path.suffix.lower() in {s.lower() for s in IMAGE_SUFFIXES})


def _open(path: Path) -> Image.Image:
    if not path.exists():
        raise InputError("file not found", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            img.load()  # decode now, so truncated files fail here
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(f"cannot read image ({e.__class__.__name__}: {e})", path) from e
    return img


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale 16-bit / float arrays to uint8 by their type's range."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        maxval = 65535 if array.max(initial=0) > 255 else 255
        return np.clip(array.astype(np.float64) * (255.0 / maxval) + 0.5, 0, 255).astype(np.uint8)
    scale = 255.0 if array.max(initial=0) <= 1.0 else 1.0
    return np.clip(array.astype(np.float64) * scale + 0.5, 0, 255).astype(np.uint8)


def to_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """Any image (grayscale, RGBA, 16-bit, float) as an (H, W, 3) uint8 RGB array."""
    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            array = np.asarray(image)
        else:
            array = np.asarray(image.convert("RGB"))
    else:
        array = np.asarray(image)
    array = _to_uint8(array)
    if array.ndim == 2:  # (H, W) -> (H, W, 3)
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    if array.ndim != 3 or array.shape[2] != 3:
        raise InputError(f"unsupported image shape {array.shape}")
    return np.ascontiguousarray(array)


def read_image(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB."""
    path = Path(path)
    try:
        return to_rgb_array(_open(path))
    except InputError as e:
        if e.path is None:
            raise InputError(e.problem, path) from e
        raise


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image file, read from its header only."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path)
    try:
        with Image.open(path) as img:
            width, height = img.size
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"cannot read image ({e})", path) from e
    return height, width


def read_mask(path: str | Path, threshold: float = 127.0) -> np.ndarray:
    """A ground-truth mask as (H, W) bool, never resized.

    8-bit masks are binarised at > `threshold` (127 for MVTec, 0 for VisA region ids);
    float masks at > 0.5; 16-bit masks at > threshold scaled to their range.
    """
    path = Path(path)
    img = _open(path)
    array = np.asarray(img)
    if array.ndim == 3:  # (H, W, C) -> (H, W): any channel set counts
        array = array.max(axis=2)
    if array.dtype == np.bool_:
        return array.copy()
    if np.issubdtype(array.dtype, np.floating):
        return array > 0.5
    if array.dtype != np.uint8 and array.max(initial=0) > 255:
        return array > threshold * 257.0
    return array > threshold
