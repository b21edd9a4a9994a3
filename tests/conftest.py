import os
import sys
from pathlib import Path

import pytest
from PIL import EpsImagePlugin

sys.path.insert(0, str(Path(__file__).parent))  # tests/helpers.py

from helpers import SHARED_DATA


def pytest_collection_modifyitems(items):
    """`@pytest.mark.needs_data(NAME)` (default magnetic_tile_mini): skipped, with the
    reason, where ../shared/data/NAME is absent; `pytest -m needs_data` runs just those."""
    for item in items:
        marker = item.get_closest_marker("needs_data")
        if marker is None:
            continue
        name = marker.args[0] if marker.args else "magnetic_tile_mini"
        if not (SHARED_DATA / name).is_dir():
            item.add_marker(pytest.mark.skip(reason=f"../shared/data/{name} is absent"))


@pytest.fixture
def feature_cache(tmp_path, monkeypatch):
    """Teacher features cached in the test's own folder, never in the user's cache."""
    monkeypatch.setenv("L2BT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(autouse=True)
def progress_as_a_new_process(monkeypatch):
    """Each test starts as a new process would: progress as the environment says and its
    clock restarted, so a short test's CLI call logs no progress line however long the
    session has been running."""
    from l2bt.utils import progress

    monkeypatch.setattr(progress, "LINES", progress.LineClock())
    monkeypatch.setattr(progress, "_enabled", [progress.progress_from_environment()])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A tiny fitted run (tests/runs.py) and its model, once per test module that asks; a
    module's own `fitted`, `run_dir` or `model` fixture takes precedence."""
    from runs import fit_tiny_run

    return fit_tiny_run(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def run_dir(fitted):
    return fitted[0]


@pytest.fixture(scope="module")
def model(fitted):
    return fitted[1]


@pytest.fixture
def stand_in_gs(tmp_path, monkeypatch) -> Path:
    """A `gs` first on PATH that leaves a marker file whenever it is started; Pillow made
    to look for Ghostscript again. Returns the marker's path (absent: never started)."""
    bin_dir, marker = tmp_path / "bin", tmp_path / "gs-was-started"
    bin_dir.mkdir()
    (bin_dir / "gs").write_text(f"#!/bin/sh\necho \"$@\" >> '{marker}'\nexit 1\n")
    (bin_dir / "gs").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)
    return marker
