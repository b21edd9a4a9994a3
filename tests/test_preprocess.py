"""preprocess.py: padding, resizing and normalisation, the aspect and tiles input modes'
geometry and windows, the work limit in pixels and the service's header limit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import (
    SMALL_TILES,
    textured_image,
)
from l2bt.config import TeacherConfig, TileSettings
from l2bt.data.image_io import ImageTooLarge
from l2bt.errors import InputError
from l2bt.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    InputGeometry,
    WorkLimit,
    normalise,
    pad_to_square,
    preprocess,
    square_frame,
    teacher_inputs,
)
from l2bt.tiling import cut_windows


@pytest.mark.parametrize("height,width", [(5, 9), (9, 5), (6, 9), (7, 7), (1, 4)])
def test_pad_keeps_image_centred_and_replicates_edges(height, width):
    rng = np.random.default_rng(height * 10 + width)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    padded = pad_to_square(image)
    side, top, left = square_frame(height, width)
    assert padded.shape == (side, side, 3) and side == max(height, width)
    assert np.array_equal(padded[top : top + height, left : left + width], image)
    # Every margin pixel equals the nearest image pixel (edge replication).
    rows = np.clip(np.arange(side) - top, 0, height - 1)
    cols = np.clip(np.arange(side) - left, 0, width - 1)
    assert np.array_equal(padded, image[rows][:, cols])
    # Centred: the two margins differ by at most one pixel.
    assert abs(2 * top - (side - height)) <= 1 and abs(2 * left - (side - width)) <= 1


def test_geometry_of_a_square_image_has_no_padding():
    assert InputGeometry.pad(10, 10, 28) == InputGeometry(10, 10, 28, 28, 10, 10, 0, 0)


def test_preprocess_matches_pil_bicubic_and_imagenet_normalisation():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)
    x, g = preprocess(image, 28)
    assert x.shape == (3, 28, 28) and x.dtype == torch.float32
    padded = pad_to_square(image)
    expected = np.asarray(Image.fromarray(padded).resize((28, 28), Image.BICUBIC)) / 255.0
    expected = (expected - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert np.allclose(x.permute(1, 2, 0).numpy(), expected, atol=1e-5)
    assert g == InputGeometry(30, 20, 28, 28, 30, 30, 0, 5)


@pytest.mark.parametrize("shape", [(1, 14, 14, 3), (3, 5, 7, 3), (2, 1, 1, 3)])
def test_normalise_is_the_plain_imagenet_formula_bit_for_bit(shape):
    """Every uint8 value, and a channels-last view (a window cut of a larger frame)."""
    rng = np.random.default_rng(sum(shape))
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    pixels.reshape(-1)[: min(256, pixels.size)] = np.arange(min(256, pixels.size))
    frame = np.pad(pixels, ((0, 0), (1, 2), (3, 0), (0, 0)))
    view = frame[:, 1 : 1 + shape[1], 3:]  # not contiguous
    plain = (pixels.astype(np.float32) / np.float32(255.0)).transpose(0, 3, 1, 2)
    mean = np.asarray(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1)
    expected = (plain - mean) / std
    for got in (normalise(pixels), normalise(view, torch.device("cpu"))):
        assert got.dtype == torch.float32 and tuple(got.shape) == expected.shape
        assert np.array_equal(got.numpy(), expected)


def plain_work(mode: str, height: int, width: int, size: int) -> int:
    """The largest array's pixels, from SPEC §9 directly: the image (and its map), the
    teacher input, and the frame the map is upsampled to."""
    if mode == "pad":
        return max(height * width, size * size, max(height, width) ** 2)
    long_side, short_side = max(height, width), min(height, width)
    short_input = max(14, round(size * short_side / long_side / 14 + 1e-9) * 14)
    return max(height * width, size * short_input)


def test_work_pixels_equal_a_plain_reference_on_random_sizes():
    rng = np.random.default_rng(0)
    sizes = [
        (1, 1),
        (1, 40000),
        (40000, 1),
        (518, 518),
        (10, 10000),
        *rng.integers(1, 3000, (40, 2)),
    ]
    for height, width in sizes:
        for mode in ("pad", "aspect"):
            for size in (56, 518, 1036):
                geometry = InputGeometry.for_mode(mode, int(height), int(width), size)
                assert geometry.work_pixels == plain_work(mode, int(height), int(width), size)


def test_work_limit_refuses_a_thin_image_in_pad_mode_only():
    WorkLimit("aspect", 1036, 50_000_000)(10, 10000)  # 1036 x 14 input, 100,000 pixels
    WorkLimit("pad", 1036, 100_000_000)(10, 10000)  # exactly the limit: accepted
    with pytest.raises(InputError) as error:
        WorkLimit("pad", 1036, 50_000_000)(10, 10000)
    assert "100,000,000 pixels" in str(error.value)
    assert "over the limit of 50,000,000 pixels (--max-pixels)" in str(error.value)


@pytest.mark.usefixtures("feature_cache")
def test_preprocess_in_tiles_mode_gives_every_window():
    image = textured_image(40, 70, 1)
    x, geometry = preprocess(image, 56, "tiles", TileSettings(28, 7))
    layout = geometry.tiles
    assert layout is not None and layout.count == 2 * 3
    assert tuple(x.shape) == (6, 3, 28, 28) and geometry.input_shape == (28, 28)
    assert geometry.n_inputs == 6 and geometry.grid == (2, 2)
    windows = cut_windows(image, layout)
    for window, one in zip(windows, x, strict=True):
        plain, _ = preprocess(np.ascontiguousarray(window), 28, "aspect")
        assert torch.equal(one, plain)
    assert torch.equal(teacher_inputs(image, geometry), x)


@pytest.mark.usefixtures("feature_cache")
def test_the_service_size_limit_uses_the_runs_windows():
    from l2bt.preprocess import header_limit

    check = header_limit(SMALL_TILES, 10_000)
    assert check == WorkLimit("tiles", 56, 10_000, TileSettings(28, 7))
    with pytest.raises(ImageTooLarge):
        check(100, 101)  # 10,100 image pixels


@pytest.mark.usefixtures("feature_cache")
@pytest.mark.parametrize(
    "height,width,size,expected",
    [
        (460, 1130, 1036, (420, 1036)),  # 1036 · 460 / 1130 = 421.7 -> 30 patches
        (1130, 460, 1036, (1036, 420)),
        (645, 1540, 1036, (434, 1036)),  # 433.9 -> 31 patches
        (1056, 4224, 1036, (266, 1036)),  # exactly 259 = 18.5 patches: halves round up
        (500, 500, 224, (224, 224)),
        (3, 900, 224, (14, 224)),  # never below one patch
        (31, 47, 56, (42, 56)),
    ],
)
def test_aspect_geometry_keeps_the_long_side_and_rounds_the_short_one(
    height, width, size, expected
):
    g = InputGeometry.aspect(height, width, size)
    scale_short = size * min(height, width) / max(height, width)
    short = min(g.input_height, g.input_width)
    assert max(g.input_height, g.input_width) == size
    assert short % 14 == 0 and short >= 14
    # nearest multiple of 14: no other multiple is closer to the exact short side
    assert short == 14 or abs(short - scale_short) <= 7
    assert (g.input_height >= g.input_width) == (height >= width)
    assert (g.frame_height, g.frame_width, g.top, g.left) == (height, width, 0, 0)
    assert (g.input_height, g.input_width) == expected


@pytest.mark.usefixtures("feature_cache")
def test_aspect_preprocess_is_a_plain_pil_bicubic_resize_without_padding():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (31, 47, 3), dtype=np.uint8)
    x, g = preprocess(image, 56, "aspect")
    assert x.shape == (3, 42, 56) and g.grid == (3, 4)
    expected = np.asarray(Image.fromarray(image).resize((56, 42), Image.BICUBIC)) / 255.0
    expected = (expected - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert np.allclose(x.permute(1, 2, 0).numpy(), expected, atol=1e-5)


@pytest.mark.usefixtures("feature_cache")
def test_an_unknown_input_mode_is_an_input_error():
    with pytest.raises(InputError, match="input_mode must be one of"):
        TeacherConfig("dinov2_vits14", "random", 56, input_mode="crop")
