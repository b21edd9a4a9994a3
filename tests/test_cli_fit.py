"""`l2bt fit` (cli/fit.py): a missing data folder and an existing run folder are one line."""

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
