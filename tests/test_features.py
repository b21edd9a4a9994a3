"""features.py: images batched by input shape; in tiles mode, training caches every window
once, and the cache key changes with the tile size, overlap and scale (SPEC §11)."""

from dataclasses import replace

import pytest
import torch
from PIL import Image

from helpers import SMALL_TILES, textured_image, with_tiles
from l2bt.config import TileSettings
from l2bt.features import cache_key, cached_train_features, iter_inputs
from l2bt.preprocess import InputGeometry, preprocess, teacher_inputs
from l2bt.teacher import load_teacher

pytestmark = pytest.mark.usefixtures("feature_cache")


@pytest.fixture(scope="module")
def teacher():
    return load_teacher("dinov2_vits14", weights="random")


def test_training_caches_every_window_once(tmp_path, teacher):
    sizes = [(40, 70), (28, 28), (20, 50)]
    paths = []
    for i, (h, w) in enumerate(sizes):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(textured_image(h, w, i)).save(paths[-1])
    features = cached_train_features(teacher, paths, SMALL_TILES, torch.device("cpu"), batch_size=4)
    geometries = [InputGeometry.tiled(h, w, SMALL_TILES.tiles) for h, w in sizes]
    assert (
        len(features) == sum(g.n_inputs for g in geometries) == 6 + 1 + 3
    )  # 28-px windows, step ≤ 21
    assert features.grids.tolist() == [[2, 2]] * len(features)
    # the windows of the last image are the last three rows: compare with the teacher
    x = teacher_inputs(textured_image(20, 50, 2), geometries[2])  # (3, 3, 28, 28)
    early, late = teacher.features(x, SMALL_TILES.layers)
    for window in range(3):
        cached_early, cached_late = features.image(len(features) - 3 + window, torch.device("cpu"))
        torch.testing.assert_close(cached_early, early[window], rtol=0, atol=2e-2)
        torch.testing.assert_close(cached_late, late[window], rtol=0, atol=2e-2)


def test_cache_key_changes_with_size_overlap_and_scale(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(textured_image(30, 30, 0)).save(path)

    def key(config):
        return cache_key(config, "w", "fp32", [path])

    base = key(SMALL_TILES)
    variants = [
        with_tiles(SMALL_TILES, size=42),
        with_tiles(SMALL_TILES, overlap=14),
        with_tiles(SMALL_TILES, scale=0.5),
        replace(SMALL_TILES, input_mode="aspect"),
    ]
    keys = {key(v) for v in variants}
    assert base not in keys and len(keys) == len(variants)
    # the default overlap (T // 4) and its explicit value are the same features
    assert key(replace(SMALL_TILES, tiles=TileSettings(28))) == key(SMALL_TILES)
    # other modes ignore the tile settings, so their cache keys stay as they were
    pad = replace(SMALL_TILES, input_mode="pad")
    assert key(pad) == key(with_tiles(pad, size=42, scale=0.5))


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
