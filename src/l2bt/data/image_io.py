"""Reading images and masks into plain arrays, with errors that name the file.

Every image l2bt reads (the CLI, the service, the data checks) goes through one decode
path, `decode_image` (a file or a request's bytes): `open_image` lets Pillow try only the
formats in `FORMATS`: PNG, JPEG, TIFF, BMP and WebP, the formats cameras and datasets
use, each decoded by Pillow's own code or a linked library. Anything else is refused by
its content, whatever its name, before any decoder runs: EPS and PostScript (which Pillow
hands to Ghostscript, an external program that would run the sender's PostScript), PDF,
GIF, ICO and Pillow's other plugins. The header is read first, so the size is checked
before any pixel is decoded; a PNG's chunk checksums are verified (a damaged transfer is
refused even where the damaged bytes still inflate); then every pixel is decoded. Images
and masks are turned upright by their EXIF orientation, as every viewer shows them;
`oriented_size` gives that size from the header.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from l2bt.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".JPG", ".PNG")
FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP")  # Pillow's names of the allowed formats
NOT_SUPPORTED = "not a supported image format (PNG, JPEG, TIFF, BMP, WebP)"

# PIL refuses very large images by default; 5 MP industrial images are far below this.
Image.MAX_IMAGE_PIXELS = 300_000_000

ORIENTATION_TAG = 0x0112  # EXIF Orientation: 1 upright; 5 to 8 include a quarter turn
QUARTER_TURNS = (5, 6, 7, 8)
HeaderCheck = Callable[[int, int], None]  # (height, width) -> None, or raises InputError


class UnsupportedFormat(InputError):
    """Not an image in one of `FORMATS` (the service answers 415)."""


class ImageTooLarge(InputError):
    """An image whose size, read from its header, is over a limit (the service answers 413)."""


def is_image_file(path: Path) -> bool:
    """An image by its suffix; hidden files (".name", e.g. macOS "._" forks and l2bt's own
    temporaries) are not images."""
    return (
        path.is_file()
        and not path.name.startswith(".")
        and path.suffix.lower() in {s.lower() for s in IMAGE_SUFFIXES}
    )


def describe_exception(error: BaseException) -> str:
    """`Type: message` on one line."""
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def open_image(source: Path | IO[bytes], path: str | Path | None = None) -> Image.Image:
    """The image's header, read by the plugin of one of `FORMATS`; no pixel decoded.

    `source`: a file path or a binary file object; `path`: the name errors give (the
    path itself by default). Raises `UnsupportedFormat`, `ImageTooLarge` (over PIL's
    own ceiling, `Image.MAX_IMAGE_PIXELS`) or `InputError` (a broken header)."""
    name = source if path is None and isinstance(source, Path) else path
    if isinstance(source, Path) and not source.exists():
        raise InputError("file not found", name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(source, formats=FORMATS)
    except UnidentifiedImageError as e:
        raise UnsupportedFormat(NOT_SUPPORTED, name) from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLarge(f"image too large ({e})", name) from e
    except Exception as e:  # a header that starts like an allowed format but is broken
        raise InputError(f"cannot read image (broken header: {describe_exception(e)})", name) from e


def load_image(image: Image.Image, path: str | Path | None = None) -> Image.Image:
    """`image` with every pixel decoded now, so a truncated file fails here, turned
    upright by its EXIF orientation (as viewers show it); use the image returned."""
    try:
        image.load()
    except Exception as e:  # decoders of untrusted bytes raise many kinds of error
        raise InputError(
            f"cannot read image ({image.format} data: {describe_exception(e)})", path
        ) from e
    if exif_orientation(image) == 1:
        return image
    return ImageOps.exif_transpose(image)


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1: upright, also when absent or unreadable)."""
    try:
        return int(image.getexif().get(ORIENTATION_TAG, 1))
    except Exception:  # a broken EXIF block is not a broken image
        return 1


def header_orientation(image: Image.Image) -> int:
    """The orientation the header states, without decoding a pixel: a PNG's from an eXIf
    chunk before its pixels only (asked for more, Pillow decodes the whole image to look
    past them, and an error there must not pass for a missing EXIF block)."""
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    return exif_orientation(image)


def oriented_size(image: Image.Image) -> tuple[int, int]:
    """(height, width) as viewers show the image: swapped by a quarter-turn orientation."""
    turned = header_orientation(image) in QUARTER_TURNS
    return (image.width, image.height) if turned else (image.height, image.width)


def verify_png(source: Path | bytes, name: str | Path | None) -> None:
    """Every chunk of a PNG against its CRC (Pillow's `verify`, on a fresh reading)."""
    stream = source if isinstance(source, Path) else io.BytesIO(source)
    try:
        with Image.open(stream, formats=("PNG",)) as again:
            again.verify()
    except Exception as e:  # Pillow raises SyntaxError, OSError … for a broken chunk
        raise InputError(f"cannot read image (damaged PNG: {describe_exception(e)})", name) from e


def declared_bit_depth(image: Image.Image) -> int:
    """Bits per sample the file declares: TIFF's BitsPerSample, else by Pillow's mode."""
    if image.format == "TIFF" and hasattr(image, "tag_v2"):
        bits = image.tag_v2.get(258)  # BitsPerSample: one value per channel
        if bits:
            return int(max(bits) if isinstance(bits, tuple) else bits)
    return 16 if image.mode.startswith("I;16") or image.format == "PNG" else 32


def _to_uint8(array: np.ndarray, depth: int | None = None) -> np.ndarray:
    """Integer arrays scaled by their bit depth (`depth`, else the dtype's), never by their
    content; values beyond the depth are refused. Floats: [0, 1] or [0, 255]."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        depth = depth or array.dtype.itemsize * 8
        top, brightest = 2**depth - 1, int(array.max(initial=0))
        if brightest > top or array.min(initial=0) < 0:
            raise InputError(
                f"pixel values up to {brightest} exceed the {depth}-bit depth "
                f"(0 to {top}; set the depth with --bit-depth)"
            )
        return (array.astype(np.float64) * (255.0 / top) + 0.5).astype(np.uint8)
    scale = 255.0 if array.max(initial=0) <= 1.0 else 1.0
    return np.clip(array.astype(np.float64) * scale + 0.5, 0, 255).astype(np.uint8)


def to_rgb_array(image: Image.Image | np.ndarray, bit_depth: int | None = None) -> np.ndarray:
    """Any image (grayscale, RGBA, 16-bit, float) as an (H, W, 3) uint8 RGB array; images
    of more than 8 bits scaled by `bit_depth` (a run's, e.g. 12 for 12-bit camera data in
    16-bit PNGs), else by their declared depth (PNG 16, TIFF BitsPerSample)."""
    depth = bit_depth
    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            array = np.asarray(image)
            depth = bit_depth or declared_bit_depth(image)
        else:
            array = np.asarray(image.convert("RGB"))
    else:
        array = np.asarray(image)
    array = _to_uint8(array, depth)
    if array.ndim == 2:  # (H, W) -> (H, W, 3)
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    if array.ndim != 3 or array.shape[2] != 3:
        raise InputError(f"unsupported image shape {array.shape}")
    return np.ascontiguousarray(array)


def decode_image(
    source: Path | bytes,
    name: str | Path | None = None,
    header_check: HeaderCheck | None = None,
    bit_depth: int | None = None,
) -> np.ndarray:
    """The one decode path (see the module docstring): a file, or an image's bytes, as
    (H, W, 3) uint8 RGB, more than 8 bits scaled by `bit_depth` (see `to_rgb_array`);
    `header_check(height, width)` runs before any pixel is decoded. Every problem is an
    `InputError` (`UnsupportedFormat`, `ImageTooLarge`) naming `name` (default the path)."""
    name = source if name is None and isinstance(source, Path) else name
    with open_image(source if isinstance(source, Path) else io.BytesIO(source), name) as image:
        try:
            if header_check is not None:
                header_check(*oriented_size(image))
            if image.format == "PNG":
                verify_png(source, name)
            return to_rgb_array(load_image(image, name), bit_depth)
        except InputError as e:
            if e.path is not None or name is None:
                raise
            raise type(e)(e.problem, name) from e  # the same kind of error, naming the file


def read_image(
    path: str | Path, header_check: HeaderCheck | None = None, bit_depth: int | None = None
) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB, through `decode_image`."""
    return decode_image(Path(path), header_check=header_check, bit_depth=bit_depth)


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image file as viewers show it, read from its header only."""
    path = Path(path)
    with open_image(path) as image:
        return oriented_size(image)


def read_mask(path: str | Path, threshold: float = 127.0) -> np.ndarray:
    """A ground-truth mask as (H, W) bool, never resized.

    8-bit masks are binarised at > `threshold` (127 for MVTec, 0 for VisA region ids);
    float masks at > 0.5; 16-bit masks at > threshold scaled to their range.
    """
    path = Path(path)
    with open_image(path) as image:
        array = np.asarray(load_image(image, path))
    if array.ndim == 3:  # (H, W, C) -> (H, W): any channel set counts
        array = array.max(axis=2)
    if array.dtype == np.bool_:
        return array.copy()
    if np.issubdtype(array.dtype, np.floating):
        return array > 0.5
    if array.dtype != np.uint8 and array.max(initial=0) > 255:
        return array > threshold * 257.0
    return array > threshold
