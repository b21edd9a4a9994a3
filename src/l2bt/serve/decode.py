"""Image bytes from a request to an (H, W, 3) uint8 array, within the pixel limit.

The bytes go through l2bt's one image decoder (`l2bt.data.image_io.open_image`): only
PNG, JPEG, TIFF, BMP and WebP are tried, anything else is 415 before any decoder (or
external program) runs. The header's size is checked first (`header_limit`: the most
pixels any array of the prediction will hold, for the run's input mode) and refused with
413 before any pixel is decoded, so neither a small file that claims a huge image (a
decompression bomb) nor a thin one whose padded frame is huge is allocated. The image
is then fully decoded, so a truncated file fails here and not in the model, turned
upright by its EXIF orientation, and
converted as files are (`to_rgb_array`: grayscale, RGBA, 16-bit and float images to
8-bit RGB). Memory per request, briefly, besides the body: the decoded image (≤ 4 bytes
per pixel) and up to two 3-byte-per-pixel copies while it becomes an RGB array; a
16-bit image is scaled through a float64 copy (8 bytes per value).
"""

from __future__ import annotations

import io

import numpy as np

from l2bt.data.image_io import (
    HeaderCheck,
    ImageTooLarge,
    UnsupportedFormat,
    load_image,
    open_image,
    oriented_size,
    to_rgb_array,
)
from l2bt.errors import InputError
from l2bt.serve.errors import RequestError

EMPTY_BODY = "empty body: send one image file (multipart field 'image', or the raw bytes)"


def decode_image(data: bytes, header_check: HeaderCheck, bit_depth: int | None) -> np.ndarray:
    """The image in `data` as (H, W, 3) uint8 RGB (more than 8 bits read as `bit_depth`-bit,
    the run's; None: as the file declares), or a RequestError: 400 (empty, truncated or
    undecodable), 413 (refused by `header_check(height, width)`, or over PIL's own
    ceiling) or 415 (not a supported image)."""
    if not data:
        raise RequestError(400, EMPTY_BODY)
    try:
        with open_image(io.BytesIO(data)) as image:
            header_check(*oriented_size(image))
            upright = load_image(image)  # turned by its EXIF orientation
            try:
                return to_rgb_array(upright, bit_depth)
            except (InputError, ValueError) as e:
                raise RequestError(
                    415, f"unsupported {image.format} image (mode {image.mode}: {e})"
                ) from e
    except UnsupportedFormat as e:
        raise RequestError(415, f"the body is {e.problem}") from e
    except ImageTooLarge as e:
        raise RequestError(413, e.problem) from e
    except InputError as e:
        raise RequestError(400, e.problem) from e
