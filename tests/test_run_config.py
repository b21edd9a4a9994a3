"""A run folder's config.json is user input: hand edits are refused with one line that
names the file and the key, exit 2, before any model is built (issue 19, item 5)."""

import json
import math
import shutil

import pytest

from helpers import TINY_TEACHER, one_error_line, write_mvtec_tree
from l2bt.cli import main
from l2bt.config import TeacherConfig, TrainConfig
from l2bt.decisions.thresholds import Thresholds
from l2bt.errors import InputError
from l2bt.run import RunDescription
from l2bt.utils.typed_dict import conforms

pytestmark = pytest.mark.usefixtures("feature_cache")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A calibrated tiny run (thresholds in config.json) and its data."""
    root = tmp_path_factory.mktemp("runconfig")
    write_mvtec_tree(root / "data", n_train=12)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("L2BT_CACHE_DIR", str(root / "cache"))
        argv = ["fit", "--data", str(root / "data"), "--category", "toy"]
        argv += ["--out", str(root / "run"), *TINY_TEACHER, "--epochs", "1"]
        assert main([*argv, "--calibration", "0.25", "--false-alarm-rate", "0.3"]) == 0
    return root


def edited_run(run, tmp_path, edit):
    """A copy of the run whose config.json text went through `edit`."""
    copy = tmp_path / "edited"
    shutil.copytree(run / "run", copy)
    path = copy / "config.json"
    path.write_text(edit(path.read_text()))
    return copy


def predict(run, model, out):
    image = next((run / "data/toy/test/good").glob("*.png"))
    return main(["predict", "--model", str(model), "--out", str(out), str(image)])


def set_key(section, key, raw):
    """An edit that sets config.json's section.key to the JSON text `raw`."""

    def edit(text):
        described = json.loads(text)
        target = described
        for part in section.split("."):
            target = target[part]
        target[key] = "@@@"
        return json.dumps(described).replace('"@@@"', raw)

    return edit


@pytest.mark.parametrize(
    ("section", "key", "raw", "said"),
    [
        ("thresholds", "image", "NaN", "thresholds.image must be float, got nan"),
        ("thresholds", "pixel", "Infinity", "thresholds.pixel must be float, got inf"),
        ("thresholds", "pixel", '"0.5"', "thresholds.pixel must be float"),
        ("thresholds", "n_calibration", "0", "thresholds.n_calibration must be ≥ 1"),
        ("thresholds", "false_alarm_rate", "1.5", "thresholds.false_alarm_rate must be in"),
        ("config.teacher", "image_size", "112.0", "config.teacher.image_size must be int"),
        ("config.teacher", "image_size", '"x"', "config.teacher.image_size must be int"),
        ("config.teacher", "image_size", "0", "config.teacher.image_size must be a positive"),
        ("config.teacher", "image_size", "57", "config.teacher.image_size must be a positive"),
        ("config.teacher", "variant", '"dinov9"', "config.teacher.variant must be one of"),
        ("config.teacher", "layers", "[7, 12]", "config.teacher.layers must be in 0..11"),
        ("config.teacher", "layers", "[7]", "config.teacher.layers must be tuple[int, int]"),
        ("config.teacher", "input_mode", '"crop"', "config.teacher.input_mode must be one of"),
        ("config.teacher", "colour", "1", "config.teacher.colour is not a known setting"),
        ("config.train", "epochs", "true", "config.train.epochs must be int"),
        ("", "precision", '"fp8"', "precision must be one of fp32, bf16"),
    ],
)
def test_hand_edited_config_is_one_line_naming_file_and_key(
    run, tmp_path, capsys, section, key, raw, said
):
    edit = set_key(section, key, raw) if section else top_level(key, raw)
    model = edited_run(run, tmp_path, edit)
    capsys.readouterr()
    assert predict(run, model, tmp_path / "out") == 2
    line = one_error_line(capsys)
    assert f"{model / 'config.json'}: {said}" in line, line
    assert "--" not in line  # never a flag the user did not give
    assert not (tmp_path / "out").exists()


def top_level(key, raw):
    def edit(text):
        described = json.loads(text)
        described[key] = "@@@"
        return json.dumps(described).replace('"@@@"', raw)

    return edit


def test_unedited_run_still_predicts(run, tmp_path):
    assert predict(run, run / "run", tmp_path / "out") == 0
    assert (tmp_path / "out/scores.csv").is_file()


def test_config_without_later_fields_keeps_their_defaults():
    """A run written before a field existed loads with that field's default."""
    record = RunDescription("l2bt", TeacherConfig(), "random", 768, train=TrainConfig())
    described = record.to_dict()
    del described["config"]["teacher"]["input_mode"]
    assert RunDescription.from_dict(described).teacher.input_mode == TeacherConfig().input_mode
    del described["config"]["train"]
    with pytest.raises(InputError, match=r"^config\.train is missing$"):
        RunDescription.from_dict(described)


def test_thresholds_round_trip_and_ints_become_floats():
    thresholds = Thresholds(0.5, 0.75, 0.1, 0.1, 9, ("a.png",))
    assert Thresholds.from_dict(thresholds.to_dict()) == thresholds
    described = thresholds.to_dict() | {"image": 1}
    loaded = Thresholds.from_dict(described)
    assert loaded.image == 1.0 and isinstance(loaded.image, float)
    with pytest.raises(InputError, match=r"^thresholds\.calibration_images must be"):
        Thresholds.from_dict(thresholds.to_dict() | {"calibration_images": [1]})


@pytest.mark.parametrize(
    ("value", "hint", "expected"),
    [
        (3, int, True),
        (3.0, int, False),
        (True, int, False),
        (3, float, True),
        (math.nan, float, False),
        (-math.inf, float, False),
        (None, str | None, True),
        ("a", str | None, True),
        (1, str | None, False),
        ([1, 2], tuple[int, int], True),
        ([1, 2, 3], tuple[int, int], False),
        ([1, "2"], tuple[int, int], False),
        ([], tuple[str, ...], True),
        (["a", None], tuple[str, ...], False),
        ("ab", tuple[str, ...], False),
    ],
)
def test_conforms(value, hint, expected):
    assert conforms(value, hint) is expected
