"""data/image_io.py: EXIF orientation is applied, as every viewer does, to images, masks
and the service; only PNG, JPEG, TIFF, BMP and WebP are ever decoded (a stand-in `gs`
first on PATH proves Ghostscript never starts); the header check runs before decoding; a
damaged PNG is refused as a file and as a body; 16-bit images are scaled by their bit
depth, never by their content, and values beyond the depth are refused."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from helpers import (
    EPS,
    FORMATS_LINE,
    DecodeSpy,
    save16,
    textured_image,
    thin_png,
)
from l2bt.data import image_io
from l2bt.data.image_io import (
    _to_uint8,
    decode_image,
    image_size,
    read_image,
    read_mask,
    to_rgb_array,
)
from l2bt.errors import InputError
from l2bt.preprocess import ImagePixelLimit, WorkLimit
from l2bt.run import check_bit_depth
from l2bt.serve.decode import decode_image as decode_body

ROTATE_CW = 6  # stored pixels are shown turned 90° clockwise


def gradient(height, width):
    """A smooth (H, W, 3) picture whose every corner differs, so turns are visible."""
    rows, cols = np.mgrid[0:height, 0:width]
    red = rows * 255 // max(height - 1, 1)
    green = cols * 255 // max(width - 1, 1)
    return np.stack([red, green, np.full_like(red, 128)], axis=2).astype(np.uint8)


def exif(orientation):
    tags = Image.Exif()
    tags[0x0112] = orientation
    return tags


def jpeg_bytes(stored, orientation):
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, format="JPEG", quality=95, exif=exif(orientation))
    return buffer.getvalue()


def test_a_jpeg_with_orientation_6_reads_as_viewers_show_it(tmp_path):
    stored = gradient(219, 264)  # 264 wide, 219 tall as stored
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_bytes(stored, ROTATE_CW))
    shown = np.rot90(stored, k=-1)  # (264, 219, 3): a clockwise quarter turn
    assert image_size(path) == (264, 219)
    image = read_image(path)
    assert image.shape == (264, 219, 3)
    assert np.abs(image.astype(int) - shown).mean() < 3  # JPEG's loss only
    served = decode_body(jpeg_bytes(stored, ROTATE_CW), ImagePixelLimit(10**6), None)
    assert np.array_equal(served, image)


def test_an_upright_jpeg_is_read_as_stored(tmp_path):
    stored = gradient(31, 45)
    path = tmp_path / "upright.jpg"
    path.write_bytes(jpeg_bytes(stored, 1))
    assert image_size(path) == (31, 45)
    assert np.abs(read_image(path).astype(int) - stored).mean() < 3


def test_masks_turn_with_their_orientation_exactly(tmp_path):
    stored = np.zeros((5, 8), dtype=np.uint8)
    stored[0, :3] = 255  # a defect along the stored top-left edge
    path = tmp_path / "mask.png"
    Image.fromarray(stored).save(path, exif=exif(ROTATE_CW))
    mask = read_mask(path)
    assert mask.shape == (8, 5)
    assert np.array_equal(mask, np.rot90(stored > 127, k=-1))


def test_the_stand_in_gs_is_what_an_unrestricted_pillow_starts(stand_in_gs):
    """The control: without an allow-list, Pillow takes the EPS body and starts `gs`."""
    with pytest.raises(Exception), Image.open(io.BytesIO(EPS)) as image:  # noqa: B017
        assert image.format == "EPS"
        image.load()
    assert stand_in_gs.exists()


@pytest.mark.parametrize("reader", [read_image, image_size, read_mask])
def test_eps_bytes_named_jpg_are_one_input_error_and_gs_never_runs(stand_in_gs, tmp_path, reader):
    path = tmp_path / "part.jpg"
    path.write_bytes(EPS)
    with pytest.raises(InputError) as error:
        reader(path)
    assert str(error.value) == f"{path}: {FORMATS_LINE}"
    assert not stand_in_gs.exists()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "BMP", "WEBP"])
def test_every_allowed_format_is_read(tmp_path, fmt):
    image = textured_image(23, 31, 5)
    path = tmp_path / f"part.{fmt.lower()}"
    Image.fromarray(image).save(path, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    expected = to_rgb_array(Image.open(path))
    assert image_size(path) == (23, 31)
    assert np.array_equal(read_image(path), expected)
    if fmt != "JPEG":  # lossless: the pixels themselves
        assert np.array_equal(read_image(path), image)


@pytest.mark.parametrize("fmt", ["GIF", "PPM", "ICO", "PDF", "EPS"])
def test_other_formats_are_refused_whatever_their_name(tmp_path, fmt):
    path = tmp_path / "part.png"
    if fmt == "EPS":
        path.write_bytes(EPS)
    else:
        Image.fromarray(textured_image(16, 16, 1)).save(path, fmt)
    with pytest.raises(InputError) as error:
        read_image(path)
    assert str(error.value) == f"{path}: {FORMATS_LINE}"


def test_read_image_runs_the_header_check_before_decoding(tmp_path, monkeypatch):
    spy = DecodeSpy()
    monkeypatch.setattr(image_io, "load_image", spy)
    path = tmp_path / "thin.png"
    path.write_bytes(thin_png(10, 40000))
    with pytest.raises(InputError) as error:
        read_image(path, header_check=WorkLimit("pad", 56, 50_000_000))
    assert str(error.value).startswith(f"{path}: ") and "--max-pixels" in str(error.value)
    assert spy.calls == 0
    assert read_image(path, header_check=WorkLimit("aspect", 56, 50_000_000)).shape == (
        10,
        40000,
        3,
    )
    assert spy.calls == 1


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


@pytest.mark.parametrize("suffix", [".png", ".tiff"])
def test_the_same_value_reads_the_same_whatever_else_the_image_holds(tmp_path, suffix):
    dim = save16(tmp_path / f"dim{suffix}", [[0, 200], [100, 200]])  # max <= 255
    bright = save16(tmp_path / f"bright{suffix}", [[0, 200], [100, 40000]])
    assert read_image(dim)[0, 1, 0] == read_image(bright)[0, 1, 0] == round(200 * 255 / 65535)
    dim12 = read_image(save16(tmp_path / f"d12{suffix}", [[0, 4095], [2048, 200]]), bit_depth=12)
    assert dim12[:, :, 0].tolist() == [
        [0, 255],
        [round(2048 * 255 / 4095), round(200 * 255 / 4095)],
    ]


def test_values_beyond_the_depth_are_refused_naming_the_file(tmp_path):
    path = save16(tmp_path / "hot.png", [[0, 4096]])
    read_image(path)  # fine as 16-bit
    with pytest.raises(InputError) as raised:
        read_image(path, bit_depth=12)
    assert (
        str(raised.value.path) == str(path)
        and "4096" in str(raised.value)
        and "12-bit" in str(raised.value)
    )
    with pytest.raises(InputError, match="between 8 and 16"):
        check_bit_depth(20)


def test_scaling_matches_a_plain_reference_on_random_arrays():
    rng = np.random.default_rng(0)
    for depth in (9, 12, 16):
        for shape in ((1, 1), (3, 5), (0, 4)):
            array = rng.integers(0, 2**depth, size=shape).astype(np.uint16)
            expected = np.array(
                [[int(v * 255 / (2**depth - 1) + 0.5) for v in row] for row in array.tolist()],
                dtype=np.uint8,
            ).reshape(shape)
            assert np.array_equal(_to_uint8(array, depth), expected)


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16"])
def test_grayscale_rgba_and_16_bit_images_become_rgb(tmp_path, mode):
    if mode == "I;16":
        image = Image.fromarray((np.arange(20 * 30).reshape(20, 30) * 100).astype(np.uint16))
    else:
        image = Image.fromarray(textured_image(20, 30, 0)).convert(mode)
    image.save(tmp_path / "x.png")
    array = read_image(tmp_path / "x.png")
    assert array.shape == (20, 30, 3) and array.dtype == np.uint8
    if mode == "I;16":
        assert array.max() == round(599 * 100 * 255 / 65535)
