"""The run's record (`l2bt.run`): one typed description, read from every layout l2bt has
written, refusing what a run cannot do without, and the same for every predictor. A run
folder's config.json is user input: hand edits are refused with one line that names the
file and the key, exit 2, before any model is built (issue 19, item 5)."""

import json
import shutil
from pathlib import Path

import pytest

from checkpoints import old_students_file
from helpers import (
    TINY_TEACHER,
    one_error_line,
    textured_image,
    write_mvtec_tree,
)
from l2bt.cli import main
from l2bt.config import TeacherConfig, TileSettings, TrainConfig
from l2bt.decisions.thresholds import Thresholds
from l2bt.errors import InputError
from l2bt.maps.layout import read_maps_record
from l2bt.model import L2BT
from l2bt.run import (
    CONFIG_FILE,
    STUDENTS_FILE,
    DataFacts,
    NormalScores,
    RunDescription,
    parse_run,
    read_run,
)
from l2bt.students import Student

pytestmark = pytest.mark.usefixtures("feature_cache")

RELEASE_0_1_0 = Path(__file__).parent / "data" / "release_0.1.0"  # written by l2bt 0.1.0


def test_a_run_folder_of_the_previous_release_loads_unchanged(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(RELEASE_0_1_0 / CONFIG_FILE, run / CONFIG_FILE)
    old_students_file(run / STUDENTS_FILE)
    old = json.loads((run / CONFIG_FILE).read_text())
    model = L2BT.load(run, device="cpu")
    record = model.record
    teacher = old["config"]["teacher"]
    assert record.teacher == TeacherConfig(
        teacher["variant"],
        teacher["weights"],
        teacher["image_size"],
        tuple(teacher["layers"]),
        teacher["input_mode"],
        TileSettings(teacher["tile_size"], teacher["tile_overlap"], teacher["tile_scale"]),
    )
    assert record.train == TrainConfig(**old["config"]["train"])
    assert (record.method, record.weights_id, record.bit_depth) == ("l2bt", "random", 12)
    assert record.thresholds == Thresholds.from_dict(old["thresholds"])
    assert record.normal_scores == NormalScores(**old["normal_patch_scores"])
    assert record.training is not None
    assert list(record.training.epoch_losses) == old["training"]["epoch_losses"]
    assert record.data is not None and record.data.category == old["data"]["category"]
    assert record.students is None  # the release kept no students identity
    prediction = model.predict(textured_image(40, 50, seed=3))
    assert prediction.anomaly_map.shape == (40, 50) and prediction.verdict is not None


def test_the_maps_record_of_the_previous_release_is_read(tmp_path):
    path = tmp_path / "run.json"
    shutil.copy(RELEASE_0_1_0 / "run.json", path)
    made_by = read_maps_record(path)
    assert made_by is not None and made_by.model == "/old/run"
    old = json.loads((RELEASE_0_1_0 / CONFIG_FILE).read_text())
    assert made_by.record.thresholds == Thresholds.from_dict(old["thresholds"])
    assert made_by.images == {}  # that release did not name the source images


def record(**changes) -> RunDescription:
    thresholds = Thresholds(1.5, 2.5, 0.01, 0.01, 3, ("a.png", "b.png", "c.png"))
    fields = dict(
        method="l2bt",
        teacher=TeacherConfig("dinov2_vits14", "random", 56, input_mode="tiles"),
        weights_id="random",
        embed_dim=384,
        precision="bf16",
        train=TrainConfig(epochs=3),
        bit_depth=12,
        normal_scores=NormalScores(0.25, 2.0),
        thresholds=thresholds,
        data=DataFacts("/data", "toy", "mvtec_ad"),
    )
    return RunDescription(**(fields | changes))


def test_the_record_round_trips_through_its_json():
    original = record()
    assert RunDescription.from_dict(json.loads(json.dumps(original.to_dict()))) == original
    assert original.colour_range == (0.25, 2.0)
    assert original.with_thresholds(None).thresholds is None


def test_what_a_run_needs_is_required(tmp_path):
    for section, key in (("config.teacher", "layers"), ("config.teacher", "variant")):
        described = record().to_dict()
        target = described["config"]["teacher"]
        del target[key]
        with pytest.raises(InputError, match=rf"^{section}\.{key} is missing$"):
            RunDescription.from_dict(described)
    described = record().to_dict()
    del described["teacher"]["weights_id"]
    with pytest.raises(InputError, match=r"teacher\.weights_id must be a string"):
        RunDescription.from_dict(described)
    described = record().to_dict() | {"colour": 1}
    with pytest.raises(InputError, match="colour is not a known key"):
        RunDescription.from_dict(described)
    with pytest.raises(InputError, match="bit_depth must be an integer"):
        RunDescription.from_dict(record().to_dict() | {"bit_depth": "12"})
    with pytest.raises(InputError, match="between 8 and 16"):
        RunDescription.from_dict(record().to_dict() | {"bit_depth": 20})


def test_problems_name_the_file(tmp_path):
    with pytest.raises(InputError) as raised:
        read_run(tmp_path)
    assert raised.value.path == str(tmp_path) and CONFIG_FILE in str(raised.value)
    (tmp_path / CONFIG_FILE).write_text("{")
    with pytest.raises(InputError, match="unreadable run configuration"):
        read_run(tmp_path)
    with pytest.raises(InputError) as raised:
        parse_run(json.dumps({"format": "other"}), "x.onnx")
    assert str(raised.value).startswith("x.onnx: unknown run format")


def test_a_method_without_the_teacher_has_a_record_too():
    bare = RunDescription("anomalib:padim", teacher=None, weights_id=None, embed_dim=None)
    assert RunDescription.from_dict(bare.to_dict()) == bare
    with pytest.raises(InputError, match="no L2BT configuration"):
        _ = bare.l2bt_config


def test_every_predictor_exposes_the_same_record(tmp_path):
    """The model and its exported file describe one run alike."""
    pytest.importorskip("onnxruntime")
    from l2bt.export.exporter import export_onnx
    from l2bt.export.runtime import OnnxRuntimePredictor
    from l2bt.teacher import load_teacher

    teacher = load_teacher("dinov2_vits14", "random")
    config = record().l2bt_config
    pad = TeacherConfig("dinov2_vits14", "random", 56)
    model = L2BT.from_parts(type(config)(pad, config.train), teacher, Student(384), Student(384))
    model.thresholds = record().thresholds
    export_onnx(model, tmp_path / "m.onnx")
    engine = OnnxRuntimePredictor(tmp_path / "m.onnx", device="cpu")
    assert engine.record == model.record and engine.record.thresholds == model.thresholds


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


def test_a_run_without_tile_settings_still_loads():
    """Runs before tiles mode had no tile settings; runs of 0.1 had them flat (tile_*)."""
    record = RunDescription("l2bt", TeacherConfig(), "random", 768, train=TrainConfig())
    described = record.to_dict()
    del described["config"]["teacher"]["tiles"]
    assert RunDescription.from_dict(described) == record
    flat = {"tile_size": 56, "tile_overlap": 14, "tile_scale": 0.5}
    described["config"]["teacher"] |= flat
    loaded = RunDescription.from_dict(described).teacher
    assert loaded is not None and loaded.tiles == TileSettings(56, 14, 0.5)
