"""Issue 20 end to end: the segmentation threshold and the clean-up stored by fit and
calibrate, used by predict's masks and regions (torch and ONNX Runtime alike), and SegF1
at each stored threshold in evaluate's figures."""

import csv
import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from helpers import fit_toy, one_error_line, write_mvtec_tree
from l2bt.cli import main
from l2bt.decisions.thresholds import Thresholds

pytestmark = pytest.mark.usefixtures("feature_cache")

FLAGS = [
    "--pixel-false-alarm-rate",
    "0.1",
    "--min-region-area",
    "3",
    "--close-radius",
    "1",
    "--fill-holes",
]


def fit(data, out, *extra):
    return fit_toy(data, out, "--calibration", "0.25", *extra)


@pytest.fixture(scope="module")
def segmented(tmp_path_factory):
    """A run with a segmentation threshold at β = 0.1 and every clean-up step."""
    root = tmp_path_factory.mktemp("segmentation")
    write_mvtec_tree(root / "data", n_train=12)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("L2BT_CACHE_DIR", str(root / "cache"))
        assert fit(root / "data", root / "run", *FLAGS) == 0
    return root


def test_fit_stores_the_segmentation_threshold_and_the_cleanup(segmented):
    stored = json.loads((segmented / "run/config.json").read_text())["thresholds"]
    assert stored["pixel_false_alarm_rate"] == 0.1
    assert stored["cleanup"] == {"min_region_area": 3, "close_radius": 1, "fill_holes": True}
    assert stored["n_calibration"] == 8  # 1/(n + 1) = 1/9 > 0.1: β is not attainable
    assert stored["attainable_pixel_rate"] == pytest.approx(1 / 9)
    assert stored["segmentation"] is not None and stored["segmentation"] <= stored["pixel"]


def test_predict_masks_follow_the_stored_rule(segmented, tmp_path):
    maps = tmp_path / "maps"
    assert (
        main(
            [
                "predict",
                "--model",
                str(segmented / "run"),
                "--out",
                str(maps),
                str(segmented / "data/toy/test"),
            ]
        )
        == 0
    )
    stored = Thresholds.from_dict(
        json.loads((segmented / "run/config.json").read_text())["thresholds"]
    )
    with open(maps / "scores.csv") as f:
        keys = [row["key"] for row in csv.DictReader(f)]
    for key in keys:
        anomaly_map = tifffile.imread(maps / f"{key}.tiff")
        mask = np.asarray(Image.open(maps / f"{key}_mask.png"))
        assert mask.shape == anomaly_map.shape and set(np.unique(mask)) <= {0, 255}
        expected = stored.cleanup.apply(anomaly_map > stored.mask_threshold)
        assert np.array_equal(mask == 255, expected)


def test_calibrate_recomputes_the_segmentation_threshold(segmented, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "students.safetensors"):
        (run / name).write_bytes((segmented / "run" / name).read_bytes())
    images = segmented / "data/toy/train/good"
    assert (
        main(
            [
                "calibrate",
                "--model",
                str(run),
                "--images",
                str(images),
                "--weights",
                "random",
                "--pixel-false-alarm-rate",
                "0.05",
                "--close-radius",
                "2",
            ]
        )
        == 0
    )
    stored = json.loads((run / "config.json").read_text())["thresholds"]
    assert stored["pixel_false_alarm_rate"] == 0.05 and stored["n_calibration"] == 12
    assert stored["cleanup"] == {"min_region_area": 0, "close_radius": 2, "fill_holes": False}
    assert stored["attainable_pixel_rate"] == pytest.approx(1 / 13)
    described = json.loads((run / "config.json").read_text())["data"]["calibration"]
    assert described["n_calibration"] == 12  # fit's held-out 8 no longer described
    assert described["calibration_images"] == stored["calibration_images"]


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--pixel-false-alarm-rate", "1.5"),
        ("--pixel-false-alarm-rate", "0"),
        ("--min-region-area", "-1"),
        ("--close-radius", "-2"),
    ],
)
def test_bad_decision_flags_stop_with_one_line(tmp_path, capsys, flag, value):
    write_mvtec_tree(tmp_path / "data", n_train=12)
    assert fit(tmp_path / "data", tmp_path / "run", flag, value) == 2
    assert flag in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_evaluate_reports_seg_f1_at_each_threshold_the_maps_model_stored(segmented, tmp_path):
    maps = tmp_path / "maps"
    assert (
        main(
            [
                "predict",
                "--model",
                str(segmented / "run"),
                "--out",
                str(maps / "toy"),
                str(segmented / "data/toy/test"),
            ]
        )
        == 0
    )
    out = tmp_path / "toy.json"
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(segmented / "data"),
                "--category",
                "toy",
                "--maps",
                str(maps),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    rules = ["pixel", "segmentation", "pixel+cleanup", "segmentation+cleanup"]
    assert list(result["seg_f1_at"]) == rules
    # the masks predict wrote are the segmentation threshold's, cleaned
    assert result["seg_f1_at"]["segmentation+cleanup"] == result["decisions"]["seg_f1"]
    (maps / "toy/run.json").unlink()
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(segmented / "data"),
                "--category",
                "toy",
                "--maps",
                str(maps),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "seg_f1_at" not in json.loads(out.read_text())
