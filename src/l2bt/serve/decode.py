"""Image bytes from a request to an (H, W, 3) uint8 array, within the pixel limit.

The pixel count is read from the file's header (PIL's `Image.open` decodes nothing)
and checked against `max_pixels` before any pixel is decoded, so a small file that
claims a huge image (a decompression bomb) is refused without allocating it. The image
is then fully decoded, so a truncated file fails here and not in the model, and
converted as files are (`to_rgb_array`: grayscale, RGBA, 16-bit and float images to
8-bit RGB). Memory per request, briefly, besides the body: the decoded image (≤ 4 bytes
per pixel) and up to two 3-byte-per-pixel copies while it becomes an RGB array (450 MB
at the default 50 MP); a 16-bit image is scaled through a float64 copy (8 bytes per
value).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from l2bt.data.image_io import to_rgb_array
from l2bt.errors import InputError
from l2bt.serve.errors import RequestError, describe_exception

EMPTY_BODY = "empty body: send one image file (multipart field 'image', or the raw bytes)"


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """The image in `data` as (H, W, 3) uint8 RGB, or a RequestError: 400 (empty,
    truncated or undecodable), 413 (over `max_pixels`) or 415 (not an image)."""
    if not data:
        raise RequestError(400, EMPTY_BODY)
    image = _open(data)
    with image:
        width, height = image.size
        check_pixels(width, height, max_pixels)
        try:
            image.load()  # decode every pixel now: truncated files fail here
        except Exception as e:  # decoders of untrusted bytes raise many kinds of error
            raise RequestError(400, f"cannot decode the {image.format} image "
                               f"({describe_exception(e)})") from e
        try:
            return to_rgb_array(image)
        except (InputError, ValueError) as e:
            raise RequestError(415, f"unsupported {image.format} image (mode {image.mode}: "
                               f"{e})") from e


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise RequestError(413, f"image of {width} x {height} = {width * height:,} pixels is "
                           f"over the limit of {max_pixels:,} pixels (--max-pixels)")


def _open(data: bytes) -> Image.Image:
    """The image's header, read; no pixel decoded yet."""
    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:  # PIL's own ceiling, above ours
        raise RequestError(413, f"image too large ({e})") from e
    except UnidentifiedImageError as e:
        raise RequestError(415, "not an image: no image format recognises this body") from e
    except Exception as e:  # a header that starts like a known format but is broken
        raise RequestError(400, f"cannot read the image header ({describe_exception(e)})") from e
