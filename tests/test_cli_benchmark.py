"""`l2bt benchmark` (cli/benchmark.py): a tiles benchmark on magnetic_tile fills every column."""

import csv
import json

import pytest

from helpers import (
    SHARED_DATA,
    described_mode,
)
from l2bt.cli import main

pytestmark = pytest.mark.usefixtures("feature_cache")


@pytest.mark.slow
@pytest.mark.needs_data
def test_a_tiles_benchmark_on_magnetic_tile_fills_every_column(tmp_path):
    """Every method in pad and tiles mode in one run: each tiles row fills every column
    the pad row fills (images larger and smaller than a 112 px window)."""
    methods = ["l2bt", "l2bt+tiles", "patchcore+tiles", "dinomaly+tiles"]
    argv = ["benchmark", "--data", str(SHARED_DATA), "--categories", "magnetic_tile_mini"]
    argv += ["--teacher", "dinov2_vits14", "--weights", "random", "--image-size", "224"]
    argv += ["--tile-size", "112", "--epochs", "1", "--dinomaly-iterations", "3"]
    assert main([*argv, "--methods", ",".join(methods), "--out", str(tmp_path / "b")]) == 0
    with open(tmp_path / "b/results.csv") as f:
        rows = {row["method"]: row for row in csv.DictReader(f)}
    assert list(rows) == methods
    # precision is undefined (empty) when a method calls no image defective
    filled = {column for column, value in rows["l2bt"].items() if value != ""} - {"precision"}
    assert {"AUPRO@30% q1", "AUPRO@5% all", "infer s/img"} <= filled
    for method in methods[1:]:
        assert {column for column, value in rows[method].items() if value != ""} >= filled
        result = json.loads((tmp_path / f"b/results/{method}/magnetic_tile_mini.json").read_text())
        assert described_mode(result["run"]["description"]) == "tiles"
