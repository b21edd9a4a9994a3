"""maps/predict.py: predict_to_folder's pipeline (the next batch decoding, the previous one
writing while one is predicted): every output belongs to its own input whatever the batch
size, the tables follow the inputs' order, and a writer's error stops the run before the
tables. `l2bt predict --resume` after a SIGKILL writes the same scores.csv and regions.csv
as an uninterrupted run, predicting only what was not finished; a predict into a folder
that holds an earlier scores.csv is refused without --resume (issue 19, item 8)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import l2bt.maps.predict as predict
from helpers import TINY_TEACHER, one_error_line, write_mvtec_tree
from l2bt.anomaly_map import image_score
from l2bt.cli import main
from l2bt.errors import InputError
from l2bt.maps.inputs import collect_inputs
from l2bt.maps.layout import MapsFolder, read_map
from l2bt.maps.predict import PredictOptions, predict_to_folder
from l2bt.maps.tables import read_score_table
from l2bt.prediction import Prediction
from l2bt.run import RunDescription


class PixelMeans:
    """A predictor whose map is each pixel's channel mean: a function of the image alone,
    so a map written under another image's key is seen at once."""

    record = RunDescription("pixel-means", teacher=None, weights_id=None, embed_dim=None)

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def predict_maps(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        self.batch_sizes.append(len(images))
        maps = [image.astype(np.float32).mean(axis=2) for image in images]
        return [Prediction(m, image_score(m)) for m in maps]


def write_images(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        shape = (5 + i, 9 + 2 * i, 3)  # every image its own size
        path = folder / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("batch_size", [1, 3, 7, 8])
def test_every_output_is_its_own_inputs(tmp_path: Path, batch_size: int) -> None:
    paths = write_images(tmp_path / "parts", 7)
    items = collect_inputs([tmp_path / "parts"])
    predictor = PixelMeans()
    summary = predict_to_folder(predictor, items, tmp_path / "maps", PredictOptions(batch_size))
    assert predictor.batch_sizes == [
        len(items[i : i + batch_size]) for i in range(0, 7, batch_size)
    ]
    folder = MapsFolder(tmp_path / "maps")
    expected = {}
    for item, path in zip(items, sorted(paths), strict=True):
        image = np.asarray(Image.open(path).convert("RGB"))
        truth = image.astype(np.float32).mean(axis=2)
        np.testing.assert_array_equal(read_map(folder.map(item.key)), truth)
        assert folder.overlay(item.key).is_file()
        expected[item.key] = image_score(truth)
    assert summary.scores == expected
    table = read_score_table(folder.scores, [item.key for item in items])
    assert table.scores == pytest.approx(expected)
    assert list(summary.scores) == [item.key for item in items]


def test_a_writers_error_stops_the_run_before_the_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_images(tmp_path / "parts", 6)
    items = collect_inputs([tmp_path / "parts"])
    write_png, calls = predict.write_png, []

    def full_disk_at_the_third(path: Path, picture: np.ndarray) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device", str(path))
        write_png(path, picture)

    monkeypatch.setattr(predict, "write_png", full_disk_at_the_third)
    with pytest.raises(OSError, match="No space left"):
        predict_to_folder(PixelMeans(), items, tmp_path / "maps", PredictOptions(2))
    folder = MapsFolder(tmp_path / "maps")
    assert not folder.scores.exists()
    written = [item for item in items if folder.overlay(item.key).is_file()]
    assert 2 <= len(written) < len(items)  # what was finished before the error stays


def test_the_first_bad_input_in_order_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "parts", 9)
    for index in (5, 2):  # two broken files; the earlier one must be the one named
        paths[index].write_bytes(paths[index].read_bytes()[:40])
    items = collect_inputs([tmp_path / "parts"])
    with pytest.raises(InputError) as error:
        predict_to_folder(PixelMeans(), items, tmp_path / "maps", PredictOptions(2))
    assert "002.png" in str(error.value) and "005.png" not in str(error.value)
    assert not any(p.is_file() for p in (tmp_path / "maps").rglob("*"))  # run.json neither


SRC = str(Path(__file__).resolve().parents[1] / "src")


STALLING = """
import sys, time
import l2bt.maps.predict as predict
from l2bt.cli import main
write_png, calls = predict.write_png, []
def stall_at_fourth_overlay(path, picture):
    calls.append(path)
    if len(calls) == 4:  # the 4th image's map and mask are written, its overlay not
        print("stalled", flush=True)
        time.sleep(600)
    write_png(path, picture)
predict.write_png = stall_at_fourth_overlay
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A calibrated tiny run (masks, verdicts, regions) and its data."""
    root = tmp_path_factory.mktemp("resume")
    write_mvtec_tree(root / "data", n_train=12)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("L2BT_CACHE_DIR", str(root / "cache"))
        argv = ["fit", "--data", str(root / "data"), "--category", "toy"]
        argv += ["--out", str(root / "run"), *TINY_TEACHER, "--epochs", "1"]
        assert main([*argv, "--calibration", "0.25", "--false-alarm-rate", "0.3"]) == 0
    config = root / "run/config.json"  # a lower pixel threshold, so that regions are found
    described = json.loads(config.read_text())
    described["thresholds"]["pixel"] = 0.9 * described["thresholds"]["image"]
    config.write_text(json.dumps(described))
    return root


def predict_argv(run, out, *extra):
    tests = str(run / "data/toy/test")
    return [
        "predict",
        "--model",
        str(run / "run"),
        "--out",
        str(out),
        "--batch-size",
        "1",
        *extra,
        tests,
    ]


def child(code, argv, run):
    env = {**os.environ, "PYTHONPATH": SRC, "L2BT_CACHE_DIR": str(run / "cache")}
    return subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, env=env)


def test_resume_after_sigkill_writes_what_an_uninterrupted_run_writes(run, tmp_path, capsys):
    reference = child(
        "from l2bt.cli import main; import sys; sys.exit(main(sys.argv[1:]))",
        predict_argv(run, tmp_path / "whole"),
        run,
    )
    assert reference.wait(timeout=300) == 0
    killed = child(STALLING, predict_argv(run, tmp_path / "resumed"), run)
    try:
        lines = iter(killed.stdout.readline, b"")  # after the plan's lines
        assert next(x for x in lines if not x.startswith(b"plan:")).strip() == b"stalled"
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    resumed = tmp_path / "resumed"
    assert not (resumed / "scores.csv").exists()
    maps = sorted(resumed.rglob("*.tiff"))
    assert len(maps) == 4  # three finished images and the fourth's map
    overlays_before = sorted(resumed.rglob("*_overlay.png"))
    assert len(overlays_before) == 3
    finished = {p: p.stat().st_mtime_ns for p in resumed.rglob("*") if p.is_file()}

    assert main(predict_argv(run, resumed, "--resume")) == 0
    assert "verdict" in (resumed / "scores.csv").read_text().splitlines()[0]
    assert len((tmp_path / "whole/regions.csv").read_text().splitlines()) > 1  # some regions
    for name in ("scores.csv", "regions.csv"):
        assert (resumed / name).read_text() == (tmp_path / "whole" / name).read_text(), name
    whole = sorted(p.relative_to(tmp_path / "whole") for p in (tmp_path / "whole").rglob("*"))
    assert sorted(p.relative_to(resumed) for p in resumed.rglob("*")) == whole
    for overlay in overlays_before:  # the three finished images were not predicted again
        key = overlay.name.removesuffix("_overlay.png")
        for path in (
            overlay,
            overlay.with_name(f"{key}.tiff"),
            overlay.with_name(f"{key}_mask.png"),
        ):
            assert path.stat().st_mtime_ns == finished[path], path


def test_predict_into_an_earlier_prediction_needs_resume(run, tmp_path, capsys):
    out = tmp_path / "maps"
    assert main(predict_argv(run, out)) == 0
    scores = (out / "scores.csv").read_text()
    capsys.readouterr()
    assert main(predict_argv(run, out)) == 2
    line = one_error_line(capsys)
    assert str(out) in line and "--resume" in line and "another --out" in line
    assert main(predict_argv(run, out, "--resume")) == 0  # everything there: nothing redone
    assert (out / "scores.csv").read_text() == scores


def test_a_predict_killed_by_sigkill_is_seen_as_unfinished(run, tmp_path, capsys):
    """A killed run writes no scores.csv, but its run.json (written before the first map)
    marks the folder: the same command without --resume stops and points at it."""
    out = tmp_path / "killed"
    killed = child(STALLING, predict_argv(run, out), run)
    try:
        lines = iter(killed.stdout.readline, b"")  # after the plan's lines
        assert next(x for x in lines if not x.startswith(b"plan:")).strip() == b"stalled"
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    assert not (out / "scores.csv").exists() and len(list(out.rglob("*.tiff"))) == 4
    capsys.readouterr()
    assert main(predict_argv(run, out)) == 2
    line = one_error_line(capsys)
    assert "run.json" in line and "--resume" in line and str(out) in line
    assert len(list(out.rglob("*.tiff"))) == 4  # nothing predicted again
    assert main(predict_argv(run, out, "--resume")) == 0
    assert (out / "scores.csv").is_file()


def test_a_resume_with_another_model_is_refused(run, tmp_path, capsys):
    out = tmp_path / "maps"
    assert main(predict_argv(run, out)) == 0
    other = tmp_path / "other"
    shutil.copytree(run / "run", other)
    described = json.loads((other / "config.json").read_text())
    described["thresholds"]["image"] *= 2
    (other / "config.json").write_text(json.dumps(described))
    argv = predict_argv(run, out, "--resume")
    argv[argv.index("--model") + 1] = str(other)
    capsys.readouterr()
    assert main(argv) == 2
    assert "made by another model" in one_error_line(capsys)
