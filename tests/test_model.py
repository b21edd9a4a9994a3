"""model.py: L2BT fit, save, load and predict (reproducible, cached features, maps of each
input's size, batched equals one by one, bf16), and its tiles and aspect input modes
against plain references."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch.nn import functional as F

from helpers import (
    SMALL_TILES,
    textured_image,
    with_tiles,
    write_mvtec_tree,
)
from l2bt import L2BT
from l2bt.anomaly_map import smooth
from l2bt.config import L2BTConfig, TeacherConfig, TileSettings, TrainConfig
from l2bt.errors import InputError
from l2bt.features import TrainFeatures, cached_train_features
from l2bt.preprocess import InputGeometry, preprocess
from l2bt.teacher import load_teacher
from l2bt.tiling import TileLayout, blend_weights, cut_windows
from l2bt.training import new_students, train_students

CONFIG = L2BTConfig(TeacherConfig("dinov2_vits14", "random", 56), TrainConfig(epochs=2))


pytestmark = pytest.mark.usefixtures("feature_cache")


@pytest.fixture
def train_paths(tmp_path):
    base = write_mvtec_tree(tmp_path / "data")
    return sorted((base / "train/good").glob("*.png"))


def student_state(model):
    return {f"f.{k}": v for k, v in model.forward_student.state_dict().items()} | {
        f"b.{k}": v for k, v in model.backward_student.state_dict().items()
    }


def test_fit_is_reproducible_and_reuses_the_feature_cache(train_paths, monkeypatch):
    first = L2BT.fit(train_paths, CONFIG, device="cpu")
    # The second fit must not run the teacher at all: its features come from the cache.
    monkeypatch.setattr(
        type(first.teacher),
        "features",
        lambda *a, **k: pytest.fail("teacher ran despite the cache"),
    )
    second = L2BT.fit(train_paths, CONFIG, device="cpu")
    a, b = student_state(first), student_state(second)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = first.record.training.epoch_losses
    assert len(losses) == 2 and all(np.isfinite(losses))


def test_another_seed_gives_other_students(train_paths):
    other = L2BTConfig(CONFIG.teacher, TrainConfig(epochs=1, seed=1))
    a = student_state(L2BT.fit(train_paths, CONFIG, device="cpu"))
    b = student_state(L2BT.fit(train_paths, other, device="cpu"))
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_cached_features_equal_fresh_teacher_features(train_paths, tmp_path):
    model = L2BT.fit(train_paths[:2], CONFIG, device="cpu")
    features = cached_train_features(
        model.teacher, train_paths[:2], CONFIG.teacher, torch.device("cpu")
    )
    from l2bt.data import read_image
    from l2bt.preprocess import preprocess

    x = torch.stack([preprocess(read_image(p), 56)[0] for p in train_paths[:2]])
    early, late = model.teacher.features(x, (7, 11))
    flat_early = early.flatten(0, 2).numpy()  # (2, h, w, D) -> (2·h·w, D)
    assert features.early.dtype == np.float16 and features.early.shape == flat_early.shape
    assert features.grids.tolist() == [list(early.shape[1:3])] * 2
    assert np.allclose(features.early, flat_early, rtol=2e-3, atol=2e-3)
    assert np.allclose(features.late, late.flatten(0, 2).numpy(), rtol=2e-3, atol=2e-3)
    first_early, _ = features.image(1, torch.device("cpu"))  # the second image, as a grid
    assert np.allclose(first_early.numpy(), early[1].numpy(), rtol=2e-3, atol=2e-3)


def test_a_nan_loss_stops_training_with_a_clear_error(tmp_path):
    early = np.full((8, 8), np.nan, np.float16)  # 2 images of 2 x 2 patches, D = 8
    features = TrainFeatures(
        early=early, late=early.copy(), grids=np.full((2, 2), 2), folder=tmp_path
    )
    with pytest.raises(InputError, match="diverged"):
        train_students(features, TrainConfig(epochs=1), torch.device("cpu"))


def test_saved_run_reloads_without_flags_and_predicts_the_same(train_paths, tmp_path):
    model = L2BT.fit(train_paths, CONFIG, device="cpu")
    run = model.save(tmp_path / "run")
    described = json.loads((run / "config.json").read_text())
    assert described["config"]["teacher"]["variant"] == "dinov2_vits14"
    assert described["config"]["train"]["epochs"] == 2
    assert (run / "students.safetensors").is_file() and (run / "loss.png").is_file()
    loaded = L2BT.load(run, device="cpu")
    image = textured_image(37, 61, seed=5)
    a, b = model.predict(image), loaded.predict(image)
    assert np.array_equal(a.anomaly_map, b.anomaly_map) and a.score == b.score
    with pytest.raises(InputError, match="not empty"):
        model.save(run)


@pytest.mark.parametrize("height,width", [(37, 61), (61, 37), (14, 14), (1, 30)])
def test_maps_have_exactly_the_input_size(train_paths, height, width):
    model = L2BT.fit(train_paths, L2BTConfig(CONFIG.teacher, TrainConfig(epochs=1)), device="cpu")
    out = model.predict(textured_image(height, width, seed=3))
    assert out.anomaly_map.shape == (height, width) and out.anomaly_map.dtype == np.float32
    assert np.isfinite(out.anomaly_map).all() and np.isfinite(out.score)


def test_batched_prediction_equals_one_by_one_and_accepts_any_input(train_paths, tmp_path):
    model = L2BT.fit(train_paths, L2BTConfig(CONFIG.teacher, TrainConfig(epochs=1)), device="cpu")
    rgb = textured_image(40, 60, seed=7)
    gray_path = tmp_path / "gray.png"
    Image.fromarray(rgb[:, :, 0]).save(gray_path)  # grayscale file -> RGB
    rgba = Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), "RGBA")
    other = textured_image(40, 60, seed=8)
    batch = model.predict_batch([rgb, str(gray_path), rgba, other])
    for image, out in zip([rgb, gray_path, rgba, other], batch, strict=True):
        alone = model.predict(image)
        assert np.allclose(out.anomaly_map, alone.anomaly_map, rtol=1e-4, atol=1e-6)
    # Grayscale, RGBA and RGB versions of the same picture give the same map.
    assert np.allclose(batch[0].anomaly_map, batch[1].anomaly_map, atol=1e-5)
    assert np.allclose(batch[0].anomaly_map, batch[2].anomaly_map, atol=1e-5)


def test_loading_with_other_teacher_weights_is_refused(train_paths, tmp_path):
    model = L2BT.fit(train_paths, L2BTConfig(CONFIG.teacher, TrainConfig(epochs=1)), device="cpu")
    run = model.save(tmp_path / "run")
    other = tmp_path / "other.pth"
    torch.save({k: v + 1 for k, v in model.teacher.state_dict().items()}, other)
    with pytest.raises(InputError, match="differ"):
        L2BT.load(run, device="cpu", weights=str(other))


def test_bf16_teacher_gives_nearly_the_fp32_map(train_paths, tmp_path):
    model = L2BT.fit(train_paths, L2BTConfig(CONFIG.teacher, TrainConfig(epochs=1)), device="cpu")
    run = model.save(tmp_path / "run")
    bf16 = L2BT.load(run, device="cpu", precision="bf16")
    assert bf16.precision == "bf16"
    image = textured_image(40, 60, seed=11)
    a, b = model.predict(image).anomaly_map, bf16.predict(image).anomaly_map
    assert not np.array_equal(a, b)  # autocast really ran in bf16
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98
    assert np.abs(a - b).max() < 0.1 * np.abs(a).max()


def model_for(teacher_config, teacher, seed=3):
    """An L2BT with random (untrained) students: enough to compare roads."""
    forward, backward = new_students(teacher.embed_dim, seed)
    return L2BT.from_parts(L2BTConfig(teacher_config), teacher, forward, backward, device="cpu")


def reference_tiled_map(model, image, settings):
    """A plain float64 reference: each window scored alone, upsampled, blended with the
    outer product of the axis weights, summed, smoothed, cropped and resized."""
    layout = TileLayout.for_image(*image.shape[:2], settings)
    rows, cols = blend_weights(layout)
    frame = np.zeros((layout.frame_height, layout.frame_width))
    for index, (top, left) in enumerate(layout.windows):
        window = cut_windows(image, layout)[index]  # (T, T, 3)
        x, _ = preprocess(np.ascontiguousarray(window), layout.size, "aspect")
        patch_map = model.patch_maps(x[None])  # (1, T/14, T/14)
        upsampled = F.interpolate(
            patch_map[None].float(), size=(layout.size,) * 2, mode="bilinear", align_corners=False
        )[0, 0].double()
        row, col = divmod(index, len(layout.col_starts))
        weight = np.outer(rows[row], cols[col])
        frame[top : top + layout.size, left : left + layout.size] += weight * upsampled.numpy()
    smoothed = smooth(torch.from_numpy(frame)[None, None])
    crop = smoothed[
        :,
        :,
        layout.top : layout.top + layout.scaled_height,
        layout.left : layout.left + layout.scaled_width,
    ]
    resized = F.interpolate(crop, size=image.shape[:2], mode="bilinear", align_corners=False)
    return resized[0, 0].numpy()


def test_one_window_equals_aspect_mode_at_the_window_size(tmp_path):
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(textured_image(56, 56, i)).save(paths[-1])
    aspect = TeacherConfig("dinov2_vits14", "random", 56, input_mode="aspect")
    fitted = L2BT.fit(paths, L2BTConfig(aspect, TrainConfig(epochs=1)), device="cpu")
    tiles = replace(aspect, input_mode="tiles", tiles=TileSettings(56))
    tiled = L2BT.from_parts(
        L2BTConfig(tiles), fitted.teacher, fitted.forward_student, fitted.backward_student, "cpu"
    )
    image = textured_image(56, 56, 9)
    image[20:26, 30:35] = 255
    expected, got = fitted.predict(image), tiled.predict(image)
    assert got.anomaly_map.shape == (56, 56)
    np.testing.assert_allclose(got.anomaly_map, expected.anomaly_map, rtol=0, atol=1e-5)
    assert got.score == pytest.approx(expected.score, abs=1e-5)


@pytest.mark.parametrize(
    "height,width,scale",
    [(57, 131, 1.0), (23, 40, 1.0), (101, 75, 0.7), (45, 19, 0.55), (28, 28, 1.0)],
)
def test_maps_are_the_image_size_and_match_the_plain_reference(teacher, height, width, scale):
    config = with_tiles(SMALL_TILES, scale=scale)
    model = model_for(config, teacher)
    image = textured_image(height, width, height + width)
    got = model.predict(image).anomaly_map
    assert got.shape == (height, width) and got.dtype == np.float32
    expected = reference_tiled_map(model, image, config.tiles)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_windows_of_several_images_batch_as_one_at_a_time(teacher):
    model = model_for(SMALL_TILES, teacher)
    images = [textured_image(h, w, h) for h, w in [(57, 131), (30, 30), (57, 131), (90, 44)]]
    together = model.predict_batch(images)
    for image, batched in zip(images, together, strict=True):
        alone = model.predict(image)
        np.testing.assert_allclose(batched.anomaly_map, alone.anomaly_map, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def teacher():
    return load_teacher("dinov2_vits14", weights="random")


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


def test_a_bf16_fit_saves_float32_students_and_predicts(tmp_path, monkeypatch):
    monkeypatch.setenv("L2BT_CACHE_DIR", str(tmp_path / "cache"))
    train = sorted((write_mvtec_tree(tmp_path / "data") / "train/good").glob("*.png"))
    config = L2BTConfig(TeacherConfig("dinov2_vits14", "random", 56), TrainConfig(epochs=2))
    model = L2BT.fit(train, config, device="cpu", precision="bf16")
    run = model.save(tmp_path / "run")
    assert all(t.dtype == torch.float32 for t in load_file(run / "students.safetensors").values())
    loaded = L2BT.load(run, device="cpu")
    assert loaded.precision == "bf16"
    out = loaded.predict(
        np.asarray(np.random.default_rng(1).integers(0, 255, (40, 60, 3)), dtype=np.uint8)
    )
    assert out.anomaly_map.shape == (40, 60) and np.isfinite(out.anomaly_map).all()
