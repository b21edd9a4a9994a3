"""A damaged PNG (bytes of its pixel data flipped in transfer) is refused by the one decode
path the service and `l2bt predict` share: its chunk checksums are checked."""

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from helpers import textured_image
from l2bt.data.image_io import decode_image
from l2bt.errors import InputError
from l2bt.preprocess import ImagePixelLimit


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def flipped(data: bytes, count: int = 32) -> bytes:
    """`count` bytes in the middle of the first IDAT chunk inverted, its CRC left as it was."""
    damaged = bytearray(data)
    at = damaged.index(b"IDAT")
    length = int.from_bytes(damaged[at - 4 : at], "big")
    for offset in range(at + 4 + length // 2, at + 4 + length // 2 + count):
        damaged[offset] ^= 0xFF
    return bytes(damaged)


def recompressed_with_a_stale_crc(image: np.ndarray) -> bytes:
    """A PNG whose pixel data inflates fine but is not what its CRC was computed on: the
    damage only the checksum can tell."""
    data = bytearray(png(image))
    at = data.index(b"IDAT")
    length = int.from_bytes(data[at - 4 : at], "big")
    pixels = bytearray(zlib.decompress(bytes(data[at + 4 : at + 4 + length])))
    pixels[len(pixels) // 2] ^= 0x10  # one pixel changed
    payload = zlib.compress(bytes(pixels))
    crc = data[at + 4 + length : at + 8 + length]  # the old chunk's
    chunk = len(payload).to_bytes(4, "big") + b"IDAT" + payload + crc
    return bytes(data[: at - 4]) + chunk + bytes(data[at + 8 + length :])


@pytest.mark.parametrize("damage", [flipped, None])
def test_a_damaged_png_is_refused_as_a_file_and_as_a_body(tmp_path, damage):
    from l2bt.serve.decode import decode_image as decode_body
    from l2bt.serve.errors import RequestError

    image = textured_image(60, 80, seed=1)
    data = flipped(png(image)) if damage else recompressed_with_a_stale_crc(image)
    path = tmp_path / "part.png"
    path.write_bytes(data)
    with pytest.raises(InputError) as raised:
        decode_image(path)
    assert str(path) in str(raised.value)
    with pytest.raises(RequestError) as answered:
        decode_body(data, ImagePixelLimit(10**6), None)
    assert answered.value.status == 400 and "PNG" in answered.value.message


def test_an_intact_png_decodes_alike_from_its_file_and_its_bytes(tmp_path):
    image = textured_image(37, 53, seed=2)
    path = tmp_path / "part.png"
    path.write_bytes(png(image))
    assert np.array_equal(decode_image(path), image)
    assert np.array_equal(decode_image(path.read_bytes()), image)
