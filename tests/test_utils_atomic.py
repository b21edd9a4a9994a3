"""Staging folders and files of killed runs are removed the next time their feature
cache or output folder is used; a live writer's are kept (issue 19, item 7)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import TINY_TEACHER, write_mvtec_tree
from l2bt.cli import main
from l2bt.utils import atomic
from l2bt.utils.atomic import TMP_MARK, remove_stale_leftovers

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
