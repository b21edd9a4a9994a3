"""Image bytes from a request to an (H, W, 3) uint8 array, within the pixel limit.

The bytes go through the decode path every file takes (`l2bt.data.image_io.decode_image`:
only PNG, JPEG, TIFF, BMP and WebP are tried, anything else is 415 before any decoder, or
external program, runs; the header's size is checked against `header_limit`, the most
pixels any array of the prediction will hold, and refused with 413 before any pixel is
decoded; a PNG's chunk checksums are verified; every pixel is decoded, so a truncated or
damaged file fails here and not in the model; EXIF orientation; the run's bit depth).
Memory per request, briefly, besides the body: the decoded image (≤ 4 bytes per pixel) and
up to two 3-byte-per-pixel copies while it becomes an RGB array; a 16-bit image is scaled
through a float64 copy (8 bytes per value).
"""

from __future__ import annotations

import numpy as np

from l2bt.data import image_io
from l2bt.data.image_io import HeaderCheck, ImageTooLarge, UnsupportedFormat
from l2bt.errors import InputError
from l2bt.serve.errors import RequestError

EMPTY_BODY = "empty body: send one image file (multipart field 'image', or the raw bytes)"


def decode_image(data: bytes, header_check: HeaderCheck, bit_depth: int | None) -> np.ndarray:
    """The image in `data` as (H, W, 3) uint8 RGB (more than 8 bits read as `bit_depth`-bit,
    the run's; None: as the file declares), or a RequestError: 400 (empty, truncated,
    damaged or undecodable), 413 (refused by `header_check(height, width)`, or over PIL's
    own ceiling) or 415 (not a supported image)."""
    if not data:
        raise RequestError(400, EMPTY_BODY)
    try:
        return image_io.decode_image(data, header_check=header_check, bit_depth=bit_depth)
    except UnsupportedFormat as e:
        raise RequestError(415, f"the body is {e.problem}") from e
    except ImageTooLarge as e:
        raise RequestError(413, e.problem) from e
    except InputError as e:
        raise RequestError(400, e.problem) from e
