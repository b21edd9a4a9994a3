"""decisions/calibration_images.py: the images held out for calibration."""

import pytest

from l2bt.decisions.calibration_images import (
    CalibrationChoice,
    parse_calibration,
    split_calibration,
)
from l2bt.errors import InputError

# ---- the guarantee, as a statistical test ---------------------------------------------------


def paths(n):
    from pathlib import Path

    return [Path(f"train/good/{i:03d}.png") for i in range(n)]


def test_default_holds_out_a_seeded_tenth_at_least_eight():
    for n, held in ((40, 8), (79, 8), (100, 10), (761, 76)):
        split = split_calibration(paths(n), CalibrationChoice(), seed=0)
        assert len(split.calibration) == held and len(split.train) == n - held
        assert set(split.train) | set(split.calibration) == set(paths(n))
        assert not set(split.train) & set(split.calibration)
        assert split.note is None
    same = split_calibration(paths(100), CalibrationChoice(), seed=0)
    other = split_calibration(paths(100), CalibrationChoice(), seed=1)
    assert same == split_calibration(paths(100), CalibrationChoice(), seed=0)
    assert same.calibration != other.calibration


def test_fewer_than_forty_images_hold_out_none_and_say_so():
    split = split_calibration(paths(39), CalibrationChoice(), seed=0)
    assert split.train == tuple(paths(39)) and split.calibration == ()
    assert "39 training images" in split.note and "\n" not in split.note


def test_validation_good_is_the_default_where_the_data_set_has_it():
    validation = paths(5)
    split = split_calibration(paths(50), CalibrationChoice(), validation=validation)
    assert split.train == tuple(paths(50)) and split.calibration == tuple(validation)
    # An explicit fraction still takes train/good.
    split = split_calibration(paths(50), CalibrationChoice(fraction=0.2), validation=validation)
    assert len(split.calibration) == 10


def test_parse_calibration(tmp_path):
    assert parse_calibration(None).is_default
    assert parse_calibration("0").disabled and parse_calibration("0.0").disabled
    assert parse_calibration("0.25").fraction == 0.25
    assert parse_calibration(str(tmp_path)).folder == tmp_path
    for bad in ("1.5", "1", "-0.1"):
        with pytest.raises(InputError, match=r"in \(0, 1\)"):
            parse_calibration(bad)
    with pytest.raises(InputError, match="calibration folder not found") as error:
        parse_calibration(str(tmp_path / "missing"))
    assert str(tmp_path / "missing") in str(error.value)


def test_a_folder_without_images_is_an_input_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(InputError, match="no image files") as error:
        split_calibration(paths(50), CalibrationChoice(folder=tmp_path))
    assert str(tmp_path) in str(error.value)


def test_a_fraction_that_leaves_nothing_to_train_on_is_an_input_error():
    with pytest.raises(InputError, match="leaves none"):
        split_calibration(paths(8), CalibrationChoice(fraction=0.5))
