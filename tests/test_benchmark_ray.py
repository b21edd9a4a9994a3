"""The benchmark on a real local Ray instance (2 CPUs, no dashboard): the same results as
a local run, failures named and redone alone, and a driver killed by SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tifffile
import torch

from helpers import SHARED_DATA, TINY_TEACHER, write_mvtec_tree
from l2bt.cli import main

ray = pytest.importorskip("ray", reason="the ray extra is not installed")

TINY = [*TINY_TEACHER, "--epochs", "1"]
MINI = ["--teacher", "dinov2_vits14", "--weights", "random", "--image-size", "112", "--epochs", "2"]
# What may differ between two runs of the same jobs: where and how fast they ran.
VOLATILE_RUN_KEYS = {
    "train_seconds",
    "inference_seconds_per_image_median",
    "peak_rss_mib",
    "device",
}


@pytest.fixture(scope="module")
def cluster():
    """One local Ray instance for the module's in-process drivers."""
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20
    )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def one_thread():
    """Ray gives each one-CPU task one torch thread; local runs compared with it do too."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def comparable(result: dict) -> dict:
    result = json.loads(json.dumps(result))
    for key in VOLATILE_RUN_KEYS:
        result["run"].pop(key, None)
    result["run"]["description"].get("training", {}).pop("student_seconds", None)
    result["run"]["description"].get("training", {}).pop("feature_seconds", None)
    result["run"]["description"].get("training", {}).pop("created", None)
    result["run"]["description"].get("training", {}).pop("device", None)
    for key in ("coreset_seconds", "reloaded"):
        result["run"]["description"].pop(key, None)
    return result


def results(bench: Path) -> dict[str, dict]:
    return {
        str(p.relative_to(bench / "results")): json.loads(p.read_text())
        for p in sorted((bench / "results").rglob("*.json"))
    }


@pytest.mark.slow
@pytest.mark.needs_data
def test_ray_results_equal_a_local_run(tmp_path, cluster, one_thread, monkeypatch):
    monkeypatch.setenv("L2BT_CACHE_DIR", str(tmp_path / "local-cache"))
    args = [
        "benchmark",
        "--data",
        str(SHARED_DATA),
        "--categories",
        "magnetic_tile_mini",
        "--methods",
        "l2bt,patchcore",
        *MINI,
    ]
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    assert main([*args, "--out", str(tmp_path / "ray"), "--ray", cluster]) == 0
    local, on_ray = results(tmp_path / "local"), results(tmp_path / "ray")
    assert (
        set(local)
        == set(on_ray)
        == {"l2bt/magnetic_tile_mini.json", "patchcore/magnetic_tile_mini.json"}
    )
    for name in local:
        assert comparable(local[name]) == comparable(on_ray[name]), name
        assert local[name]["aupro"] == on_ray[name]["aupro"]  # metrics identical
    assert (tmp_path / "ray/results.md").read_text() != ""
    assert (tmp_path / "ray/cache").is_dir()  # the feature cache on the shared storage
    for plot in ("pro_curves_magnetic_tile_mini.png", "smallest_defects_magnetic_tile_mini.png"):
        assert (tmp_path / "ray/plots" / plot).is_file()


def test_a_failing_task_is_named_and_a_rerun_redoes_only_it(tmp_path, cluster, capsys, monkeypatch):
    monkeypatch.setenv("L2BT_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    write_mvtec_tree(data, "a")
    write_mvtec_tree(data, "b")
    external = tmp_path / "ext"
    # Maps from another tool for category a only: its job for b must fail.
    assert (
        main(
            [
                "benchmark",
                "--data",
                str(data),
                "--categories",
                "a",
                "--methods",
                "l2bt",
                "--out",
                str(tmp_path / "first"),
                *TINY,
            ]
        )
        == 0
    )
    copy_maps(tmp_path / "first/maps/l2bt/a", external / "a")
    bench = tmp_path / "bench"
    args = [
        "benchmark",
        "--data",
        str(data),
        "--methods",
        f"l2bt,external:ext={external}",
        "--out",
        str(bench),
        "--ray",
        cluster,
        *TINY,
    ]
    capsys.readouterr()
    assert main(args) == 1
    captured = capsys.readouterr()
    failure_lines = [
        line
        for line in (captured.out + captured.err).splitlines()
        if "failed" in line and "b / ext" in line
    ]
    assert failure_lines and "anomaly map not found" in failure_lines[0]
    assert "1 of 4 jobs failed" in captured.err
    done = sorted(results(bench))
    assert done == ["ext/a.json", "l2bt/a.json", "l2bt/b.json"]
    kept = {name: (bench / "results" / name).read_bytes() for name in done}
    copy_maps(bench / "maps/l2bt/b", external / "b")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "[b / ext] AUPRO" in out
    assert out.count("done earlier, kept") == 3
    assert sorted(results(bench)) == ["ext/a.json", "ext/b.json", "l2bt/a.json", "l2bt/b.json"]
    assert all((bench / "results" / name).read_bytes() == kept[name] for name in done)


def copy_maps(source: Path, target: Path) -> None:
    for path in source.rglob("*.tiff"):
        out = target / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(out, tifffile.imread(path))


@pytest.mark.slow
def test_a_driver_killed_by_sigkill_loses_nothing_finished(tmp_path):
    data = tmp_path / "data"
    for category in ("a", "b", "c"):
        write_mvtec_tree(data, category)
    bench = tmp_path / "bench"
    command = [
        sys.executable,
        "-m",
        "l2bt",
        "benchmark",
        "--data",
        str(data),
        "--methods",
        "l2bt",
        "--out",
        str(bench),
        "--ray",
        *TINY,
    ]
    env = {
        **os.environ,
        "L2BT_CACHE_DIR": str(tmp_path / "cache"),
        "RAY_ADDRESS": "",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    driver = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not list((bench / "results").rglob("*.json")):
            assert driver.poll() is None, "the driver ended before any result"
            assert time.monotonic() < deadline, "no result within 300 s"
            time.sleep(0.2)
        os.kill(driver.pid, signal.SIGKILL)  # the driver alone: Ray must stop its tasks
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    finished = {p: p.read_bytes() for p in (bench / "results").rglob("*.json")}
    assert finished and len(finished) < 3
    for content in finished.values():
        json.loads(content)  # every result written is whole
    time.sleep(5)  # what Ray still had running is stopped, not writing
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert sorted(p.name for p in (bench / "results").rglob("*.json")) == [
        "a.json",
        "b.json",
        "c.json",
    ]
    assert all(path.read_bytes() == content for path, content in finished.items())
    assert not [p for p in bench.rglob("*") if ".l2bt-tmp" in p.name]
