"""The run's record (`l2bt.run`): one typed description, read from every layout l2bt has
written, refusing what a run cannot do without, and the same for every predictor."""

import json
import shutil
from pathlib import Path

import pytest

from checkpoints import old_students_file
from helpers import textured_image
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
