import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/helpers.py


@pytest.fixture
def feature_cache(tmp_path, monkeypatch):
    """Teacher features cached in the test's own folder, never in the user's cache."""
    monkeypatch.setenv("L2BT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(autouse=True)
def progress_clock_per_test(monkeypatch):
    """Each test starts as a new process would: the progress clock restarts, so a short
    test's CLI call logs no progress line however long the session has been running."""
    import time

    from l2bt.utils import progress

    monkeypatch.setattr(progress, "_last_line", [time.monotonic()])
