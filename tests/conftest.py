import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/helpers.py


@pytest.fixture
def feature_cache(tmp_path, monkeypatch):
    """Teacher features cached in the test's own folder, never in the user's cache."""
    monkeypatch.setenv("L2BT_CACHE_DIR", str(tmp_path / "cache"))
