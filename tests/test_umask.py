"""Run folders and every output follow the user's umask (not mkdtemp's 0700 or a
writer's 0600)."""

import os
import stat

import pytest

from helpers import TINY_TEACHER, write_mvtec_tree
from l2bt.cli import main
from l2bt.utils.atomic import atomic_file, atomic_folder, current_umask


@pytest.fixture(params=[0o022, 0o077])
def umask(request):
    before = os.umask(request.param)
    yield request.param
    os.umask(before)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_the_umask_is_read_without_changing_it(umask):
    assert current_umask() == umask
    assert current_umask() == umask


def test_atomic_outputs_get_the_umask_modes_not_the_temporaries(tmp_path, umask):
    with atomic_folder(tmp_path / "run") as staging:
        (staging / "inner").mkdir()
        (staging / "inner/a.txt").write_text("a")
        private = staging / "secret.bin"
        private.write_bytes(b"x")
        private.chmod(0o600)  # as some writers leave their files
    assert mode(tmp_path / "run") == 0o777 & ~umask
    assert mode(tmp_path / "run/inner") == 0o777 & ~umask
    assert mode(tmp_path / "run/inner/a.txt") == 0o666 & ~umask
    assert mode(tmp_path / "run/secret.bin") == 0o666 & ~umask
    with atomic_file(tmp_path / "one.txt") as tmp:
        tmp.write_text("1")
        tmp.chmod(0o600)
    assert mode(tmp_path / "one.txt") == 0o666 & ~umask


@pytest.mark.usefixtures("feature_cache")
def test_a_fitted_run_folder_and_predicted_maps_follow_the_umask(tmp_path, umask):
    write_mvtec_tree(tmp_path / "data")
    run, maps = tmp_path / "run", tmp_path / "maps"
    fit = ["fit", "--data", str(tmp_path / "data"), "--category", "toy", "--out", str(run)]
    assert main([*fit, *TINY_TEACHER, "--epochs", "1"]) == 0
    assert (
        main(["predict", "--model", str(run), "--out", str(maps), str(tmp_path / "data/toy/test")])
        == 0
    )
    assert mode(run) == 0o777 & ~umask
    files = [p for p in [*run.rglob("*"), *maps.rglob("*")] if p.is_file()]
    assert run / "students.safetensors" in files and maps / "scores.csv" in files
    assert {mode(p) for p in files} == {0o666 & ~umask}
    folders = [p for p in maps.rglob("*") if p.is_dir()]
    assert folders and {mode(p) for p in folders} == {0o777 & ~umask}
