"""EXIF orientation is applied, as every viewer does, to images, masks and the service."""

import io

import numpy as np
from PIL import Image

from l2bt.data.image_io import image_size, read_image, read_mask
from l2bt.preprocess import ImagePixelLimit
from l2bt.serve.decode import decode_image

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
    served = decode_image(jpeg_bytes(stored, ROTATE_CW), ImagePixelLimit(10**6), None)
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
