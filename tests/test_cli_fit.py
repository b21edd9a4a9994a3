"""`l2bt fit` (cli/fit.py): a missing data folder, an existing run folder and bad
calibration values or false-alarm rates are one line and write nothing."""

from __future__ import annotations

import pytest

from helpers import fit_toy, one_error_line, write_mvtec_tree

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
