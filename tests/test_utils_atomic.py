"""utils/atomic.py: staging folders and files of killed runs are removed the next time
their feature cache or output folder is used; a live writer's are kept (issue 19, item 7).
Run folders and every output follow the user's umask (not mkdtemp's 0700 or a writer's
0600)."""

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import TINY_TEACHER, write_mvtec_tree
from l2bt.cli import main
from l2bt.utils import atomic
from l2bt.utils.atomic import (
    TMP_MARK,
    atomic_file,
    atomic_folder,
    current_umask,
    remove_stale_leftovers,
)

SRC = str(Path(atomic.__file__).resolve().parents[1])
WRITER = """
import sys, time
from pathlib import Path
from l2bt.utils.atomic import atomic_file, atomic_folder
target = Path(sys.argv[1])
kind = sys.argv[2]
with (atomic_folder if kind == "folder" else atomic_file)(target) as staging:
    if kind == "folder":
        (staging / "part.npy").write_bytes(b"x" * 1000)
    else:
        staging.write_bytes(b"half")
    print("ready", flush=True)
    time.sleep(600)
"""


def writer(target, kind="folder"):
    """A process writing `target` through l2bt.utils.atomic, stopped in the middle."""
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target), kind], stdout=subprocess.PIPE, env=env
    )
    assert proc.stdout.readline().strip() == b"ready"
    return proc


def killed_writer(target, kind="folder"):
    """What a writer killed by SIGKILL leaves: its staging, named with its pid."""
    proc = writer(target, kind)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return leftovers(target.parent)


def leftovers(folder):
    return sorted(p for p in Path(folder).rglob(f".*{TMP_MARK}*"))


def test_only_leftovers_of_gone_writers_are_removed(tmp_path):
    dead = killed_writer(tmp_path / "a")
    assert len(dead) == 1 and dead[0].is_dir()
    live = writer(tmp_path / "b")
    try:
        before = set(leftovers(tmp_path))
        assert remove_stale_leftovers(tmp_path) == 1
        after = set(leftovers(tmp_path))
        assert after == before - set(dead) and len(after) == 1
        old = time.time() - 30 * 24 * 3600
        os.utime(next(iter(after)), (old, old))  # a live writer is kept however old
        assert remove_stale_leftovers(tmp_path) == 0
    finally:
        live.kill()
        live.wait()
    assert remove_stale_leftovers(tmp_path) == 1
    assert not leftovers(tmp_path) and not (tmp_path / "a").exists()


def test_unknown_writers_leftovers_go_only_when_unchanged_for_long(tmp_path):
    """Another host's (or an older l2bt's) staging: no pid to ask, so its age decides."""
    other = tmp_path / f".run{TMP_MARK}-1@another-host~abc"
    legacy = tmp_path / f".map{TMP_MARK}.tiff"
    other.mkdir()
    (other / "inner.npy").write_bytes(b"x")
    legacy.write_bytes(b"x")
    assert remove_stale_leftovers(tmp_path) == 0
    old = time.time() - atomic.STALE_AFTER_S - 60
    for path in (other, other / "inner.npy", legacy):
        os.utime(path, (old, old))
    assert remove_stale_leftovers(tmp_path) == 2
    assert not other.exists() and not legacy.exists()


def test_recursive_finds_nested_files_and_others_are_untouched(tmp_path):
    nested = tmp_path / "toy/test/spot"
    nested.mkdir(parents=True)
    killed_writer(nested / "000.tiff", kind="file")
    (nested / "001.tiff").write_bytes(b"kept")
    (tmp_path / ".hidden").write_bytes(b"kept")
    assert remove_stale_leftovers(tmp_path) == 0  # not recursive: the nested file stays
    assert remove_stale_leftovers(tmp_path, recursive=True) == 1
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [".hidden", "001.tiff"]


@pytest.mark.usefixtures("feature_cache")
def test_fit_and_predict_clear_killed_runs_leftovers(tmp_path):
    cache = Path(os.environ["L2BT_CACHE_DIR"])
    cache.mkdir()
    killed_writer(cache / "0123456789abcdef01234567")  # a killed feature extraction
    killed_writer(tmp_path / "runs" / "run")  # a killed fit beside --out
    (tmp_path / "maps/toy").mkdir(parents=True)
    killed_writer(tmp_path / "maps/toy/000.tiff", kind="file")  # a killed predict
    live = writer(cache / "fedcba9876543210fedcba98")  # another fit extracting now
    try:
        write_mvtec_tree(tmp_path / "data")
        argv = ["fit", "--data", str(tmp_path / "data"), "--category", "toy"]
        assert (
            main([*argv, "--out", str(tmp_path / "runs/run"), *TINY_TEACHER, "--epochs", "1"]) == 0
        )
        assert leftovers(cache) == [p for p in leftovers(cache) if "fedcba" in p.name] != []
        assert not leftovers(tmp_path / "runs")
        images = tmp_path / "data/toy/test/good"
        argv = ["predict", "--model", str(tmp_path / "runs/run"), "--out", str(tmp_path / "maps")]
        assert main([*argv, str(images)]) == 0
        assert not leftovers(tmp_path / "maps")
    finally:
        live.kill()
        live.wait()


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
