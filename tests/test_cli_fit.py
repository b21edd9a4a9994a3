"""`l2bt fit` (cli/fit.py): a missing data folder, an existing run folder, structural
problems of the data, bad calibration values, false-alarm rates or tile values are one line
and write nothing; fit and predict in tiles mode through the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tifffile
from PIL import Image

from helpers import fit_toy, one_error_line, write_mvtec_tree
from l2bt.cli import main

pytestmark = pytest.mark.usefixtures("feature_cache")


def fit(data, out, *extra):
    return fit_toy(data, out, *extra)


def test_missing_data_folder_is_one_line(tmp_path, capsys):
    assert fit(tmp_path / "nowhere", tmp_path / "run") == 2
    assert "nowhere" in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_existing_run_folder_is_not_overwritten_without_the_flag(tmp_path, capsys):
    write_mvtec_tree(tmp_path / "data")
    (tmp_path / "run").mkdir()
    (tmp_path / "run/keep.txt").write_text("mine")
    assert fit(tmp_path / "data", tmp_path / "run") == 2
    assert "--overwrite" in one_error_line(capsys)
    assert (tmp_path / "run/keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "value,match",
    [
        ("missing-folder", "calibration folder not found"),
        ("1.5", "--calibration 1.5"),
        ("-0.5", "--calibration -0.5"),
        ("EMPTY", "no image files"),
    ],
)
def test_bad_calibration_values_are_one_line_and_write_nothing(tmp_path, capsys, value, match):
    write_mvtec_tree(tmp_path / "data")
    if value == "EMPTY":
        (tmp_path / "empty").mkdir()
        value = str(tmp_path / "empty")
    elif value == "missing-folder":
        value = str(tmp_path / value)
    assert fit(tmp_path / "data", tmp_path / "run", "--calibration", value) == 2
    line = one_error_line(capsys)
    assert match in line
    assert not (tmp_path / "run").exists()


def test_bad_false_alarm_rate_is_one_line(tmp_path, capsys):
    write_mvtec_tree(tmp_path / "data")
    assert fit(tmp_path / "data", tmp_path / "run", "--false-alarm-rate", "1.2") == 2
    assert "--false-alarm-rate must be in (0, 1), got 1.2" in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def fit_tiles(data, out, *extra):
    return fit_toy(data, out, "--input-mode", "tiles", *extra)


def test_fit_and_predict_in_tiles_mode_via_the_cli(tmp_path):
    sizes = ((40, 60), (56, 42), (23, 31))
    write_mvtec_tree(tmp_path / "data", sizes=sizes)
    flags = ["--tile-size", "28", "--tile-overlap", "7", "--tile-scale", "0.9"]
    assert fit_tiles(tmp_path / "data", tmp_path / "run", *flags, "--calibration", "0") == 0
    teacher = json.loads((tmp_path / "run/config.json").read_text())["config"]["teacher"]
    assert teacher["input_mode"] == "tiles"
    assert teacher["tiles"] == {"size": 28, "overlap": 7, "scale": 0.9}
    test_dir = tmp_path / "data/toy/test"
    maps = tmp_path / "maps"
    assert (
        main(["predict", "--model", str(tmp_path / "run"), "--out", str(maps), str(test_dir)]) == 0
    )
    written = sorted(maps.rglob("*.tiff"))
    assert len(written) == 2 * len(sizes)
    for path in written:
        image = test_dir.parent / path.relative_to(maps).with_suffix(".png")
        anomaly_map = tifffile.imread(path)
        assert anomaly_map.shape == Image.open(image).size[::-1]
        assert np.isfinite(anomaly_map).all()


@pytest.mark.parametrize(
    "flags,named",
    [
        (["--tile-size", "500"], "--tile-size"),
        (["--tile-size", "0"], "--tile-size"),
        (["--tile-size", "28", "--tile-overlap", "28"], "--tile-overlap"),
        (["--tile-overlap", "-1"], "--tile-overlap"),
        (["--tile-scale", "0"], "--tile-scale"),
        (["--tile-scale", "1.5"], "--tile-scale"),
    ],
)
def test_bad_tile_values_stop_with_one_line(tmp_path, capsys, flags, named):
    write_mvtec_tree(tmp_path / "data")
    assert fit_tiles(tmp_path / "data", tmp_path / "run", *flags) == 2
    assert named in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def errors(capsys) -> list[str]:
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and not any("Traceback" in line for line in lines)
    return lines


@pytest.mark.parametrize(
    "breakage,expected",
    [
        (lambda base: shutil.rmtree(base / "test"), "test: missing folder"),
        (lambda base: [p.unlink() for p in (base / "train/good").iterdir()], "no training images"),
        (lambda base: (base / "ground_truth/spot/002_mask.png").unlink(), "without a mask"),
    ],
)
def test_fit_stops_on_structural_problems_with_one_line(tmp_path, capsys, breakage, expected):
    base = write_mvtec_tree(tmp_path / "data")
    breakage(base)
    code = main(
        [
            "fit",
            "--data",
            str(tmp_path / "data"),
            "--category",
            "toy",
            "--out",
            str(tmp_path / "run"),
            "--weights",
            "random",
            "--teacher",
            "dinov2_vits14",
            "--image-size",
            "28",
            "--epochs",
            "1",
        ]
    )
    assert code == 2
    lines = errors(capsys)
    assert len(lines) == 1 and expected in lines[0]
    assert not (tmp_path / "run").exists()
