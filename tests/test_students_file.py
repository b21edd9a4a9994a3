"""A run's students file knows which run it belongs to: students copied in from another run
(other settings, or the same settings and another seed), of another width, or a record
missing what a run needs, are refused in one whole line before anything is predicted."""

import json
import shutil

import pytest
from safetensors import safe_open

from checkpoints import old_students_file
from helpers import fit_toy, one_error_line, write_mvtec_tree
from l2bt.cli import main
from l2bt.run import CONFIG_FILE, STUDENTS_FILE
from l2bt.students_file import file_digest

pytestmark = pytest.mark.usefixtures("feature_cache")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny runs: `a` (56 px, seed 0), `other_size` (42 px), `other_seed` (seed 1) and
    `other_data` (the settings of `a`, other training images)."""
    root = tmp_path_factory.mktemp("students")
    write_mvtec_tree(root / "data")
    write_mvtec_tree(root / "more", n_train=9)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("L2BT_CACHE_DIR", str(root / "cache"))
        assert fit_toy(root / "data", root / "a") == 0
        assert fit_toy(root / "data", root / "other_size", "--image-size", "42") == 0
        assert fit_toy(root / "data", root / "other_seed", "--seed", "1") == 0
        assert fit_toy(root / "more", root / "other_data") == 0
    return root


def with_students_of(runs, tmp_path, source):
    """A copy of run `a` holding `source`'s students file."""
    copy = tmp_path / "a"
    shutil.copytree(runs / "a", copy)
    shutil.copy(runs / source / STUDENTS_FILE, copy / STUDENTS_FILE)
    return copy


def predict(runs, model, out):
    image = next((runs / "data/toy/test/good").glob("*.png"))
    return main(["predict", "--model", str(model), "--out", str(out), str(image)])


def test_the_students_carry_their_identity(runs):
    described = json.loads((runs / "a" / CONFIG_FILE).read_text())["students"]
    path = runs / "a" / STUDENTS_FILE
    assert described["digest"] == file_digest(path) and described["dim"] == 384
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    assert metadata["trained_with"] == described["trained_with"]
    assert "dinov2_vits14" in metadata["settings"] and "56 px pad" in metadata["settings"]


@pytest.mark.parametrize(
    ("source", "theirs", "ours"),
    [("other_size", "42 px", "56 px"), ("other_seed", "seed 1", "seed 0")],
)
def test_students_trained_with_other_settings_are_refused(
    runs, tmp_path, capsys, source, theirs, ours
):
    model = with_students_of(runs, tmp_path, source)
    capsys.readouterr()
    assert predict(runs, model, tmp_path / "out") == 2
    line = one_error_line(capsys)
    assert str(model / STUDENTS_FILE) in line and "not for this run's" in line
    assert line.index(theirs) < line.index("not for this run's") < line.index(ours)
    assert not (tmp_path / "out").exists()


def test_students_of_the_same_settings_on_other_images_are_refused_by_their_hash(
    runs, tmp_path, capsys
):
    model = with_students_of(runs, tmp_path, "other_data")
    capsys.readouterr()
    assert predict(runs, model, tmp_path / "out") == 2
    line = one_error_line(capsys)
    assert "not the students this run saved" in line and str(model / STUDENTS_FILE) in line


def test_students_of_another_width_are_refused_in_a_whole_sentence(runs, tmp_path, capsys):
    """An earlier run's folder (no students identity) with students 768 wide."""
    model = tmp_path / "a"
    shutil.copytree(runs / "a", model)
    described = json.loads((model / CONFIG_FILE).read_text())
    del described["students"]
    (model / CONFIG_FILE).write_text(json.dumps(described))
    old_students_file(model / STUDENTS_FILE, dim=768)
    capsys.readouterr()
    assert predict(runs, model, tmp_path / "out") == 2
    line = one_error_line(capsys)
    assert "the students are 768 wide but the run's teacher dinov2_vits14 is 384 wide" in line
    assert line.endswith("not this run's students")


def test_a_record_without_the_teacher_layers_is_refused(runs, tmp_path, capsys):
    model = tmp_path / "a"
    shutil.copytree(runs / "a", model)
    described = json.loads((model / CONFIG_FILE).read_text())
    del described["config"]["teacher"]["layers"]
    (model / CONFIG_FILE).write_text(json.dumps(described))
    capsys.readouterr()
    assert predict(runs, model, tmp_path / "out") == 2
    line = one_error_line(capsys)
    assert str(model / CONFIG_FILE) in line and "config.teacher.layers is missing" in line
