"""`l2bt calibrate` (cli/calibrate.py) and what a calibrated run gives, on runs fitted with
calibration images held out (the module's fixtures): fit's stored thresholds, predict's
masks, verdicts and regions, calibrate's recomputed thresholds and its one-line refusals,
submissions; and (issue 20) the segmentation threshold and the clean-up stored by fit and
calibrate, used by predict's masks and regions, and SegF1 at each stored threshold in
evaluate's figures."""

import csv
import json

import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy import ndimage

from checkpoints import small_checkpoint
from helpers import fit_toy, one_error_line, textured_image, write_mvtec_tree
from l2bt.cli import main
from l2bt.decisions.thresholds import Thresholds
from l2bt.maps import submission

pytestmark = pytest.mark.usefixtures("feature_cache")


def fit(data, out, *extra):
    return fit_toy(data, out, *extra)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A run fitted on 12 images with 8 held out for calibration (α = 0.2), and its data."""
    root = tmp_path_factory.mktemp("decisions")
    write_mvtec_tree(root / "data", n_train=12)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("L2BT_CACHE_DIR", str(root / "cache"))
        assert (
            fit(root / "data", root / "run", "--calibration", "0.25", "--false-alarm-rate", "0.2")
            == 0
        )
    return root


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_fit_holds_out_calibration_images_and_stores_thresholds(calibrated):
    described = json.loads((calibrated / "run/config.json").read_text())
    thresholds = described["thresholds"]
    assert thresholds["n_calibration"] == 8 and len(thresholds["calibration_images"]) == 8
    assert thresholds["false_alarm_rate"] == 0.2
    assert thresholds["guaranteed_rate"] == 0.2  # k = ceil(9 · 0.8) = 8 ≤ 8
    assert described["training"]["n_images"] == 4
    held_out = set(thresholds["calibration_images"])
    assert described["data"]["calibration"]["calibration_images"] == sorted(held_out)
    train = {str(p) for p in (calibrated / "data/toy/train/good").glob("*.png")}
    assert held_out < train


def test_predict_writes_masks_verdicts_and_regions(calibrated, tmp_path, capsys):
    test_dir = calibrated / "data/toy/test"
    assert (
        main(
            [
                "predict",
                "--model",
                str(calibrated / "run"),
                "--out",
                str(tmp_path / "first"),
                str(test_dir),
            ]
        )
        == 0
    )
    # A random teacher separates nothing, so calibrated masks are empty; thresholds inside
    # the maps' range (the 90th percentile pixel, the median score) exercise every output.
    first = read_csv(tmp_path / "first/scores.csv")
    values = np.concatenate(
        [tifffile.imread(tmp_path / "first" / f"{r['key']}.tiff").ravel() for r in first]
    )
    run = tmp_path / "run"
    run.mkdir()
    (run / "students.safetensors").write_bytes(
        (calibrated / "run/students.safetensors").read_bytes()
    )
    described = json.loads((calibrated / "run/config.json").read_text())
    described["thresholds"]["pixel"] = float(np.quantile(values, 0.9))
    described["thresholds"]["image"] = float(np.median([float(r["score"]) for r in first]))
    (run / "config.json").write_text(json.dumps(described))
    capsys.readouterr()
    maps = tmp_path / "maps"
    assert main(["predict", "--model", str(run), "--out", str(maps), str(test_dir)]) == 0
    out = capsys.readouterr().out
    thresholds = described["thresholds"]
    scores = read_csv(maps / "scores.csv")
    assert {r["verdict"] for r in scores} == {"good", "defective"}
    n_defective = sum(float(r["score"]) > thresholds["image"] for r in scores)
    assert f"{n_defective} of {len(scores)} images defective" in out
    regions = read_csv(maps / "regions.csv")
    n_regions = 0
    for row in scores:
        key = row["key"]
        image = Image.open(test_dir.parent / f"{key}.png")
        mask = np.asarray(Image.open(maps / f"{key}_mask.png"))
        anomaly_map = tifffile.imread(maps / f"{key}.tiff")
        assert mask.shape == image.size[::-1] and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        assert np.array_equal(mask == 255, anomaly_map > thresholds["pixel"])
        assert row["verdict"] == (
            "defective" if float(row["score"]) > thresholds["image"] else "good"
        )
        # regions.csv lists exactly the 8-connected components of the written mask
        labels, count = ndimage.label(mask == 255, structure=np.ones((3, 3)))
        components = []
        for label in range(1, count + 1):
            rows, cols = np.nonzero(labels == label)
            components.append(
                (
                    len(rows),
                    cols.min(),
                    rows.min(),
                    cols.max() + 1,
                    rows.max() + 1,
                    float(anomaly_map[rows, cols].max()),
                )
            )
        listed = [
            (
                int(r["area_px"]),
                int(r["x0"]),
                int(r["y0"]),
                int(r["x1"]),
                int(r["y1"]),
                float(r["max_score"]),
            )
            for r in regions
            if r["key"] == key
        ]
        assert sorted(listed) == sorted(components)
        n_regions += count
    assert n_regions > 0


def test_calibrate_recomputes_thresholds_on_new_good_images(calibrated, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "students.safetensors"):
        (run / name).write_bytes((calibrated / "run" / name).read_bytes())
    good = tmp_path / "good"
    good.mkdir()
    for i in range(19):
        Image.fromarray(textured_image(40 + i, 50, 300 + i)).save(good / f"{i}.png")
    assert (
        main(["calibrate", "--model", str(run), "--images", str(good), "--false-alarm-rate", "0.1"])
        == 0
    )
    assert "guaranteed false-alarm rate 0.1" in capsys.readouterr().out
    thresholds = json.loads((run / "config.json").read_text())["thresholds"]
    assert thresholds["n_calibration"] == 19 and thresholds["false_alarm_rate"] == 0.1
    assert thresholds["calibration_images"] == [
        str(good / f"{i}.png") for i in sorted(range(19), key=str)
    ]


def test_calibrate_with_another_teacher_or_no_images_is_one_line(calibrated, tmp_path, capsys):
    before = (calibrated / "run/config.json").read_text()
    other = tmp_path / "other.pth"
    small_checkpoint(other, seed=3)
    good = calibrated / "data/toy/test/good"
    assert (
        main(
            [
                "calibrate",
                "--model",
                str(calibrated / "run"),
                "--images",
                str(good),
                "--weights",
                str(other),
            ]
        )
        == 2
    )
    line = one_error_line(capsys)
    assert "config.json" in line and "differ from those the students were trained with" in line
    assert (
        main(
            ["calibrate", "--model", str(calibrated / "run"), "--images", str(tmp_path / "nothing")]
        )
        == 2
    )
    assert str(tmp_path / "nothing") in one_error_line(capsys)
    assert (calibrated / "run/config.json").read_text() == before


def write_ad2_object(root, name, count, skip=None):
    for split, suffix in submission.SPLIT_SUFFIXES.items():
        folder = root / name / split
        folder.mkdir(parents=True)
        for i in range(count):
            stem = f"{i:03d}_{suffix}"
            if stem != skip:
                Image.fromarray(textured_image(30 + i, 44, i)).save(folder / f"{stem}.png")
    return root / name


def test_submission_writes_the_upload_layout(calibrated, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(submission.OFFICIAL_FILE_COUNTS, "can", 3)
    obj = write_ad2_object(tmp_path / "ad2", "can", 3)
    out = tmp_path / "upload"
    assert (
        main(["predict", "--model", str(calibrated / "run"), "--submission", str(out), str(obj)])
        == 0
    )
    assert "can: 6 images, maps and thresholded masks" in capsys.readouterr().out
    for split, suffix in submission.SPLIT_SUFFIXES.items():
        maps = sorted((out / "anomaly_images/can" / split).iterdir())
        masks = sorted((out / "anomaly_images_thresholded/can" / split).iterdir())
        assert [p.name for p in maps] == [f"{i:03d}_{suffix}.tiff" for i in range(3)]
        assert [p.name for p in masks] == [f"{i:03d}_{suffix}.png" for i in range(3)]
        for i, (m, k) in enumerate(zip(maps, masks, strict=True)):
            values, mask = tifffile.imread(m), np.asarray(Image.open(k))
            assert values.dtype == np.float16 and values.shape == (30 + i, 44)
            assert mask.shape == (30 + i, 44) and set(np.unique(mask)) <= {0, 255}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left


def test_a_bad_submission_layout_names_object_and_split(calibrated, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(submission.OFFICIAL_FILE_COUNTS, "can", 3)
    obj = write_ad2_object(tmp_path / "ad2", "can", 3, skip="002_mixed")
    out = tmp_path / "upload"
    assert (
        main(["predict", "--model", str(calibrated / "run"), "--submission", str(out), str(obj)])
        == 2
    )
    line = one_error_line(capsys)
    assert "object can, split test_private_mixed" in line and "missing 002_mixed" in line
    assert not out.exists()
    assert (
        main(
            [
                "predict",
                "--model",
                str(calibrated / "run"),
                "--submission",
                str(out),
                str(write_ad2_object(tmp_path / "ad2", "toaster", 1)),
            ]
        )
        == 2
    )
    assert "not an MVTec AD 2 object" in one_error_line(capsys)


FLAGS = [
    "--pixel-false-alarm-rate",
    "0.1",
    "--min-region-area",
    "3",
    "--close-radius",
    "1",
    "--fill-holes",
]


def fit_calibrated(data, out, *extra):
    return fit_toy(data, out, "--calibration", "0.25", *extra)


@pytest.fixture(scope="module")
def segmented(tmp_path_factory):
    """A run with a segmentation threshold at β = 0.1 and every clean-up step."""
    root = tmp_path_factory.mktemp("segmentation")
    write_mvtec_tree(root / "data", n_train=12)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("L2BT_CACHE_DIR", str(root / "cache"))
        assert fit_calibrated(root / "data", root / "run", *FLAGS) == 0
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
    assert fit_calibrated(tmp_path / "data", tmp_path / "run", flag, value) == 2
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
