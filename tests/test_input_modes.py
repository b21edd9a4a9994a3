"""The aspect input mode (SPEC §9) and the published image score."""

import numpy as np
import pytest
import torch
from PIL import Image

from checkpoints import reference_pos_embed
from helpers import textured_image
from l2bt import L2BT
from l2bt.anomaly_map import image_score, top_count
from l2bt.config import L2BTConfig, TeacherConfig, TrainConfig
from l2bt.errors import InputError
from l2bt.features import cached_train_features, iter_inputs
from l2bt.preprocess import IMAGENET_MEAN, IMAGENET_STD, InputGeometry, preprocess
from l2bt.teacher import load_teacher

pytestmark = pytest.mark.usefixtures("feature_cache")


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


def test_aspect_preprocess_is_a_plain_pil_bicubic_resize_without_padding():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (31, 47, 3), dtype=np.uint8)
    x, g = preprocess(image, 56, "aspect")
    assert x.shape == (3, 42, 56) and g.grid == (3, 4)
    expected = np.asarray(Image.fromarray(image).resize((56, 42), Image.BICUBIC)) / 255.0
    expected = (expected - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert np.allclose(x.permute(1, 2, 0).numpy(), expected, atol=1e-5)


def test_an_unknown_input_mode_is_an_input_error():
    with pytest.raises(InputError, match="input_mode must be one of"):
        TeacherConfig("dinov2_vits14", "random", 56, input_mode="crop")


@pytest.mark.parametrize("variant", ["dinov2_vits14", "dinov2_vits14_reg"])
@pytest.mark.parametrize("height,width", [(460, 1130), (1540, 645), (1056, 4224)])
def test_position_embeddings_of_aspect_grids_follow_the_official_formula(variant, height, width):
    teacher = load_teacher(variant, weights="random")
    grid = InputGeometry.aspect(height, width, 518).grid
    assert grid[0] != grid[1]
    expected = reference_pos_embed(teacher.pos_embed, *grid, variant.endswith("_reg"))
    assert torch.allclose(teacher.interpolate_pos_encoding(*grid), expected, atol=1e-6)


ODD_SIZES = [(37, 53), (53, 37), (29, 29), (17, 61), (45, 23)]


@pytest.fixture(scope="module")
def aspect_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("aspect")
    paths = []
    for i, (h, w) in enumerate(ODD_SIZES):
        paths.append(root / f"{i}.png")
        Image.fromarray(textured_image(h, w, i)).save(paths[-1])
    config = L2BTConfig(
        TeacherConfig("dinov2_vits14", "random", 56, input_mode="aspect"), TrainConfig(epochs=1)
    )
    return L2BT.fit(paths, config, device="cpu", cache_dir=root / "cache"), paths


def test_aspect_mode_maps_are_exactly_each_image_size(aspect_model):
    model, _ = aspect_model
    images = [textured_image(h, w, 50 + i) for i, (h, w) in enumerate(ODD_SIZES)]
    predictions = model.predict_batch(images)
    for (h, w), prediction in zip(ODD_SIZES, predictions, strict=True):
        assert prediction.anomaly_map.shape == (h, w)
        assert prediction.anomaly_map.dtype == np.float32
        assert np.isfinite(prediction.anomaly_map).all() and np.isfinite(prediction.score)
    # One image alone gives the same map as within a mixed batch.
    alone = model.predict(images[3])
    assert np.allclose(alone.anomaly_map, predictions[3].anomaly_map, atol=1e-5)


def test_aspect_mode_cache_holds_each_image_grid(aspect_model):
    model, paths = aspect_model
    features = cached_train_features(
        model.teacher,
        paths,
        model.config.teacher,
        torch.device("cpu"),
        cache_dir=paths[0].parent / "cache",
    )
    grids = [InputGeometry.aspect(h, w, 56).grid for h, w in ODD_SIZES]
    assert [tuple(g) for g in features.grids.tolist()] == grids
    assert features.n_patches == sum(h * w for h, w in grids)
    x, _ = preprocess(np.asarray(Image.open(paths[0]).convert("RGB")), 56, "aspect")
    early, _ = model.teacher.features(x[None], model.config.teacher.layers)
    cached_early, _ = features.image(0, torch.device("cpu"))
    assert np.allclose(cached_early.numpy(), early[0].numpy(), rtol=2e-3, atol=2e-3)


def test_pad_and_aspect_features_do_not_share_a_cache_entry(aspect_model, tmp_path):
    model, paths = aspect_model
    pad = TeacherConfig("dinov2_vits14", "random", 56, input_mode="pad")
    features = cached_train_features(
        model.teacher,
        paths,
        pad,
        torch.device("cpu"),
        cache_dir=paths[0].parent / "cache",
    )
    assert features.grids.tolist() == [[4, 4]] * len(paths)


def test_batches_group_images_that_share_an_input_shape(tmp_path):
    sizes = [(30, 40), (40, 30), (30, 40), (30, 40), (40, 30), (30, 40)]
    paths = []
    for i, (h, w) in enumerate(sizes):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(textured_image(h, w, i)).save(paths[-1])
    geometries = [InputGeometry.aspect(h, w, 56) for h, w in sizes]
    batches = list(iter_inputs(paths, geometries, batch_size=2))
    assert [rows for rows, _ in batches] == [[0, 2], [3, 5], [1, 4]]
    for rows, x in batches:
        assert tuple(x.shape) == (2, 3, *geometries[rows[0]].input_shape)
        for row, one in zip(rows, x, strict=True):
            assert torch.equal(one, preprocess(textured_image(*sizes[row], row), 56, "aspect")[0])


@pytest.mark.parametrize("n", [1, 999, 1000, 1001, 1961, 1_499_000, 561_741, 2_073_601])
def test_top_count_is_the_published_floor(n):
    assert top_count(n) == max(1, int(0.001 * n))


def test_top_count_equals_the_published_floor_for_many_sizes():
    rng = np.random.default_rng(0)
    for n in rng.integers(1, 50_000_000, 20_000):
        assert top_count(int(n)) == max(1, int(0.001 * int(n)))


@pytest.mark.parametrize("height,width", [(37, 53), (1000, 1499), (123, 457), (9, 9)])
def test_image_score_averages_the_floor_of_a_tenth_of_a_percent(height, width):
    rng = np.random.default_rng(height)
    anomaly_map = rng.random((height, width)).astype(np.float32)
    k = max(1, int(0.001 * height * width))  # the published code: int(), not ceil
    expected = np.sort(anomaly_map.ravel().astype(np.float64))[::-1][:k].mean()
    assert image_score(anomaly_map) == pytest.approx(expected, rel=1e-12)
