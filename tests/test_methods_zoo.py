"""anomalib's model zoo in the benchmark (l2bt.methods.zoo): on a few magnetic_tile_mini
images, with random backbones and small inputs, so the whole file runs in minutes."""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from helpers import SHARED_DATA, TINY_TEACHER, one_error_line, textured_image
from l2bt.cli import main
from l2bt.config import TeacherConfig, TileSettings
from l2bt.data.image_io import read_image
from l2bt.methods import MethodSettings, make_method
from l2bt.methods.zoo import zoo_model
from l2bt.methods.zoo.models import Schedule
from l2bt.tiling import TileLayout

pytestmark = [pytest.mark.usefixtures("feature_cache")]
MINI = SHARED_DATA / "magnetic_tile_mini"
CATEGORY = "tiles"
RANDOM = ["--weights", "random"]
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach the hub


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory):
    """8 training images, 4 held-out good ones for calibration, and 7 test images (3 good,
    2 blowholes, 2 cracks with masks), linked from magnetic_tile_mini; and a folder of
    class folders standing for ImageNette (EfficientAD's penalty images)."""
    root = tmp_path_factory.mktemp("zoo")
    base = root / "data" / CATEGORY
    train = sorted((MINI / "train/good").iterdir())
    links = {"train/good": train[:8]}
    links["test/good"] = sorted((MINI / "test/good").iterdir())[:3]
    for defect in ("blowhole", "crack"):
        images = sorted((MINI / "test" / defect).iterdir())[:2]
        links[f"test/{defect}"] = images
        links[f"ground_truth/{defect}"] = [
            MINI / "ground_truth" / defect / f"{p.stem}_mask.png" for p in images
        ]
    links["../../calibration"] = train[8:12]
    for folder, paths in links.items():
        (base / folder).mkdir(parents=True, exist_ok=True)
        for path in paths:
            (base / folder / path.name).symlink_to(path)
    imagenet = root / "imagenet" / "texture"
    imagenet.mkdir(parents=True)
    for i in range(4):
        Image.fromarray(textured_image(300, 300, i)).save(imagenet / f"{i}.png")
    return root


def benchmark_args(tree, out, methods, *extra):
    return [
        "benchmark",
        "--data",
        str(tree / "data"),
        "--categories",
        CATEGORY,
        "--methods",
        methods,
        "--out",
        str(out),
        "--calibration",
        str(tree / "calibration"),
        "--imagenet-dir",
        str(tree / "imagenet"),
        *TINY_TEACHER,
        "--epochs",
        "1",
        "--max-steps",
        "2",
        *extra,
    ]


def zoo_settings(tree, **changes):
    teacher = TeacherConfig(weights="random", **changes)
    return MethodSettings(teacher=teacher, epochs=1, imagenet_dir=str(tree / "imagenet"))


@pytest.mark.slow
@pytest.mark.needs_data
def test_zoo_models_run_beside_l2bt_in_one_benchmark(small_tree, tmp_path):
    bench = tmp_path / "bench"
    methods = "l2bt,anomalib:padim@64,anomalib:patchcore@64,anomalib:efficient_ad"
    assert main(benchmark_args(small_tree, bench, methods)) == 0
    with open(bench / "results.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert list(rows) == methods.split(",")
    for method, row in rows.items():
        result = json.loads((bench / "results" / method / f"{CATEGORY}.json").read_text())
        empty = {column for column, value in row.items() if value == ""}
        # Only figures the data leave undefined are empty: a size bin without regions, the
        # precision of a method that called no image defective, rho where AUPRO(all) is 0.
        undefined = {"AUPRO@30% <=64px"} if result["aupro_abs"]["0.3"]["<=64"] is None else set()
        undefined |= {f"rho@{float(k):.0%}" for k, v in result["aupro"].items() if v["all"] == 0}
        if result["decisions"]["image"]["recall"] == 0:
            undefined.add("precision")
        assert empty <= undefined, (method, empty)
    calibration = {p.name for p in (small_tree / "calibration").iterdir()}
    for method in rows:
        result = json.loads((bench / "results" / method / f"{CATEGORY}.json").read_text())
        assert result["thresholds"]["n_calibration"] == 4
        assert result["run"]["n_train"] == 8
        stored = json.loads((bench / "models" / method / CATEGORY / "thresholds.json").read_text())
        assert {Path(p).name for p in stored["thresholds"]["calibration_images"]} == calibration
        for path in (small_tree / "data" / CATEGORY / "test").rglob("*.jpg"):
            key = path.relative_to(small_tree / "data" / CATEGORY).with_suffix(".tiff")
            anomaly_map = tifffile.imread(bench / "maps" / method / CATEGORY / key)
            assert anomaly_map.shape == read_image(path).shape[:2]
    padim = json.loads((bench / "results/anomalib:padim@64" / f"{CATEGORY}.json").read_text())
    efficient = json.loads(
        (bench / "results/anomalib:efficient_ad" / f"{CATEGORY}.json").read_text()
    )
    assert padim["low_res_protocol"]["size"] == 64 and efficient["low_res_protocol"]["size"] == 256
    assert "low_res_protocol" not in json.loads(
        (bench / f"results/l2bt/{CATEGORY}.json").read_text()
    )
    described = efficient["run"]["description"]
    assert described["backbone_weights"] == "random"
    assert described["schedule"] == "1 epoch or 2 steps (--epochs 1, --max-steps 2)"
    assert described["training"]["steps"] == 2  # the step limit came first
    report = (bench / "results.md").read_text()
    assert "## anomalib models" in report and "wide_resnet50_2" in report
    assert "## The original resolution against the 256 × 256 protocol" in report
    # A zoo job killed after fitting resumes from its kept model; finished jobs are kept.
    padim_path = bench / "results/anomalib:padim@64" / f"{CATEGORY}.json"
    kept = {m: (bench / "results" / m / f"{CATEGORY}.json").stat().st_mtime_ns for m in rows}
    padim_path.unlink()
    assert main(benchmark_args(small_tree, bench, methods)) == 0
    resumed = json.loads(padim_path.read_text())
    assert resumed["run"]["description"]["training"]["reloaded"] is True
    assert resumed["aupro"] == padim["aupro"]
    for method in rows:
        if method != "anomalib:padim@64":
            path = bench / "results" / method / f"{CATEGORY}.json"
            assert path.stat().st_mtime_ns == kept[method]


@pytest.mark.needs_data
def test_a_zoo_map_is_anomalib_s_own_prediction_and_is_reloaded(small_tree, tmp_path):
    from anomalib.engine import Engine

    train = sorted((small_tree / "data" / CATEGORY / "train/good").iterdir())
    method = make_method("anomalib:padim@64", zoo_settings(small_tree))
    method.fit(train, tmp_path / "model")
    image_path = next((small_tree / "data" / CATEGORY / "test/crack").iterdir())
    ours, ours_score = method.raw_outputs([read_image(image_path)])
    engine = Engine(default_root_dir=tmp_path / "engine", barebones=True, accelerator="cpu")
    (theirs,) = engine.predict(model=method.module, data_path=image_path)
    assert ours.shape == (1, 64, 64)
    np.testing.assert_allclose(ours, theirs.anomaly_map.reshape(1, 64, 64), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ours_score, theirs.pred_score.reshape(1), rtol=1e-6)
    # A second fit in the same folder reloads the trained model: the same maps, no training.
    again = make_method("anomalib:padim@64", zoo_settings(small_tree))
    again.fit(train, tmp_path / "model")
    assert again.facts["reloaded"] is True
    image = read_image(image_path)
    (first,), (second,) = method.predict_maps([image]), again.predict_maps([image])
    assert first.anomaly_map.shape == image.shape[:2]
    np.testing.assert_array_equal(first.anomaly_map, second.anomaly_map)


@pytest.mark.needs_data
def test_padim_on_native_windows_gives_maps_of_each_image_s_size(small_tree, tmp_path):
    settings = zoo_settings(small_tree, tiles=TileSettings(size=140))
    method = make_method("anomalib:padim+tiles", settings)
    train = sorted((small_tree / "data" / CATEGORY / "train/good").iterdir())[:4]
    method.fit(train, tmp_path / "model")
    windows = sum(
        TileLayout.for_image(*read_image(p).shape[:2], settings.teacher.tiles).count for p in train
    )
    assert method.facts["n_train_inputs"] == windows > len(train)
    images = [
        read_image(p) for p in sorted((small_tree / "data" / CATEGORY / "test/crack").iterdir())
    ]
    for image, prediction in zip(images, method.predict_maps(images), strict=True):
        assert prediction.anomaly_map.shape == image.shape[:2]
        assert np.isfinite(prediction.anomaly_map).all() and prediction.anomaly_map.std() > 0


def test_a_zoo_model_trains_on_its_authors_schedule_unless_told_otherwise():
    efficient, padim = zoo_model("efficient_ad"), zoo_model("padim")
    assert efficient.schedule(None, None) == Schedule(None, 70_000, "authors' default")
    assert efficient.schedule(1, None).trainer_arguments() == {"max_epochs": 1, "max_steps": 70_000}
    assert padim.schedule(None, 5).trainer_arguments() == {"max_epochs": 1, "max_steps": 5}
    assert padim.schedule(None, None).words() == "1 epoch (authors' default)"
    assert padim.schedule(3, 5).words() == "3 epochs or 5 steps (--epochs 3, --max-steps 5)"


def test_an_unknown_zoo_model_lists_the_available_ones_in_one_line(tmp_path, capsys):
    args = ["benchmark", "--data", str(tmp_path), "--categories", "x", "--out", str(tmp_path / "b")]
    assert main([*args, "--methods", "anomalib:magic", *RANDOM]) == 2
    line = one_error_line(capsys)
    assert "magic" in line and "padim" in line and "efficient_ad" in line
    assert main([*args, "--methods", "anomalib:padim+aspect", *RANDOM]) == 2
    assert "+tiles only" in one_error_line(capsys)
    assert not (tmp_path / "b").exists()


@pytest.mark.needs_data
def test_a_missing_pretrained_file_stops_before_any_work(tmp_path, capsys, monkeypatch):
    import anomalib.utils.path
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(anomalib.utils.path, "get_pretrained_weights_dir", lambda: tmp_path / "pre")
    data = ["--data", str(SHARED_DATA), "--categories", MINI.name]
    args = ["benchmark", *data, "--out", str(tmp_path / "b")]
    assert main([*args, "--methods", "anomalib:patchcore"]) == 2
    line = one_error_line(capsys)
    assert "anomalib:patchcore" in line and "timm/wide_resnet50_2" in line
    assert str(tmp_path / "hub") in line and "--weights random" in line
    imagenet = ["--imagenet-dir", str(tmp_path)]
    (tmp_path / "class").mkdir()
    assert main([*args, "--methods", "anomalib:efficient_ad", *imagenet]) == 2
    line = one_error_line(capsys)
    assert "pretrained_teacher_s.pth" in line and str(tmp_path / "pre") in line
    assert not (tmp_path / "b").exists()


@pytest.mark.needs_data
def test_a_zoo_model_failing_inside_anomalib_is_reported_and_the_others_go_on(
    small_tree, tmp_path, capsys, monkeypatch
):
    from anomalib.models.image.padim.torch_model import PadimModel

    def broken(self, *args, **kwargs):
        raise RuntimeError("broken inside anomalib")

    monkeypatch.setattr(PadimModel, "forward", broken)
    bench = tmp_path / "bench"
    assert main(benchmark_args(small_tree, bench, "anomalib:padim@64,l2bt")) == 1
    err = capsys.readouterr().err
    assert f"[{CATEGORY} / anomalib:padim@64] failed: RuntimeError: broken inside anomalib" in err
    assert (bench / "results/l2bt" / f"{CATEGORY}.json").is_file()
    assert not (bench / "results/anomalib:padim@64").exists()


@pytest.mark.parametrize("frame, crop", [(8, 4), (9, 4), (8, 5)])
def test_a_centre_crop_s_map_is_put_back_where_torchvision_cropped_it(frame, crop):
    import torch
    from torchvision.transforms.v2.functional import center_crop

    from l2bt.methods.zoo.maps import uncrop

    positions = torch.arange(frame * frame, dtype=torch.float32).reshape(1, frame, frame)
    cropped = center_crop(positions, [crop, crop])  # (1, crop, crop): each value its position
    top, left = divmod(int(cropped[0, 0, 0]), frame)
    restored = uncrop(cropped, frame)
    assert restored.shape == (1, frame, frame)
    kept = (slice(None), slice(top, top + crop), slice(left, left + crop))
    assert torch.equal(restored[kept], positions[kept])
    # The border repeats the crop's edge.
    assert torch.equal(restored[0, :top, left : left + crop], cropped[0, :1].expand(top, crop))
    assert torch.equal(restored[0, top : top + crop, :left], cropped[0, :, :1].expand(crop, left))
