import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import textured_image, write_mvtec_tree
from l2bt import L2BT
from l2bt.config import L2BTConfig, TeacherConfig, TrainConfig
from l2bt.errors import InputError
from l2bt.features import TrainFeatures, cached_train_features
from l2bt.training import train_students

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
