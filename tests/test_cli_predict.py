"""`l2bt predict` (cli/predict.py): the spec layout, one-line refusals (unreadable input,
not a run, an output inside an input tree, a frame too large, EPS bytes named .jpg) and
a benchmark's model predicting with its thresholds."""

from __future__ import annotations

import csv
import hashlib
import json
import re

import numpy as np
import pytest
import tifffile
from PIL import Image

from helpers import (
    EPS,
    FORMATS_LINE,
    SHARED_DATA,
    TINY_TEACHER,
    fit_toy,
    one_error_line,
    save16,
    write_mvtec_tree,
)
from l2bt.cli import main

pytestmark = pytest.mark.usefixtures("feature_cache")


def fit(data, out, *extra):
    return fit_toy(data, out, *extra)


def test_fit_then_predict_writes_the_spec_layout(tmp_path, capsys):
    write_mvtec_tree(tmp_path / "data")
    assert fit(tmp_path / "data", tmp_path / "run") == 0
    test_dir = tmp_path / "data/toy/test"
    maps = tmp_path / "maps/toy"
    assert (
        main(["predict", "--model", str(tmp_path / "run"), "--out", str(maps), str(test_dir)]) == 0
    )
    for image in sorted(test_dir.rglob("*.png")):
        rel = image.relative_to(test_dir.parent).with_suffix("")
        anomaly_map = tifffile.imread(maps / f"{rel}.tiff")
        assert anomaly_map.dtype == np.float32
        assert anomaly_map.shape == Image.open(image).size[::-1]
        assert (maps / f"{rel}_overlay.png").is_file()
    with open(maps / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["key"] for r in rows} == {
        str(p.relative_to(test_dir.parent).with_suffix("")) for p in test_dir.rglob("*.png")
    }
    assert all(np.isfinite(float(r["score"])) for r in rows)


def test_unreadable_input_fails_before_any_map_is_written(tmp_path, capsys):
    write_mvtec_tree(tmp_path / "data")
    assert fit(tmp_path / "data", tmp_path / "run") == 0
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(inputs / "a.png")
    data = (tmp_path / "data/toy/test/good/000.png").read_bytes()
    (inputs / "b.png").write_bytes(data[: len(data) // 2])  # truncated
    capsys.readouterr()
    assert (
        main(
            [
                "predict",
                "--model",
                str(tmp_path / "run"),
                "--out",
                str(tmp_path / "out"),
                str(inputs),
            ]
        )
        == 2
    )
    assert "b.png" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_predict_with_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "notrun").mkdir()
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(image)
    assert (
        main(
            [
                "predict",
                "--model",
                str(tmp_path / "notrun"),
                "--out",
                str(tmp_path / "out"),
                str(image),
            ]
        )
        == 2
    )
    assert "notrun" in one_error_line(capsys)


@pytest.mark.slow
@pytest.mark.needs_data
def test_fit_and_predict_on_real_magnetic_tile_images(tmp_path):
    root = SHARED_DATA
    assert (
        main(
            [
                "fit",
                "--data",
                str(root),
                "--category",
                "magnetic_tile_mini",
                "--out",
                str(tmp_path / "run"),
                "--teacher",
                "dinov2_vits14",
                "--weights",
                "random",
                "--image-size",
                "224",
                "--epochs",
                "3",
            ]
        )
        == 0
    )
    test_dir = root / "magnetic_tile_mini/test"
    out = tmp_path / "maps/magnetic_tile_mini"
    assert (
        main(
            [
                "predict",
                "--model",
                str(tmp_path / "run"),
                "--out",
                str(out),
                "--no-overlays",
                str(test_dir),
            ]
        )
        == 0
    )
    images = sorted(test_dir.rglob("*.jpg")) + sorted(test_dir.rglob("*.png"))
    assert len(images) == 35
    for image in images:
        rel = image.relative_to(test_dir.parent).with_suffix("")
        assert tifffile.imread(out / f"{rel}.tiff").shape == Image.open(image).size[::-1]


def checksums(folder):
    return {
        p: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_predict_into_the_input_tree_is_refused_and_touches_nothing(tmp_path, capsys):
    """The MVTec tree itself as --out: the outputs of `test/` would land inside the input
    folder (whose next predict would read the maps as inputs), so it stops with one line
    and writes nothing; a single file may still be predicted beside itself."""
    write_mvtec_tree(tmp_path / "data")
    assert fit(tmp_path / "data", tmp_path / "run") == 0
    root = tmp_path / "data/toy"
    before = checksums(root)
    capsys.readouterr()
    run = tmp_path / "run"
    assert main(["predict", "--model", str(run), "--out", str(root), str(root / "test")]) == 2
    line = one_error_line(capsys)
    assert str(root / "test") in line and "inside" in line
    assert checksums(root) == before
    # the case: the input folder inside --out, as `--out runs runs/inp`
    assert main(["predict", "--model", str(run), "--out", str(tmp_path / "data"), str(root)]) == 2
    assert "inside" in one_error_line(capsys) and checksums(root) == before
    single = root / "test/good/000.png"
    data = single.read_bytes()
    assert main(["predict", "--model", str(run), "--out", str(single.parent), str(single)]) == 0
    assert single.read_bytes() == data


def test_an_output_that_would_replace_an_input_stops_first(tmp_path, capsys):
    """TIFF images predicted into their own folder: the map <stem>.tiff is the input."""
    write_mvtec_tree(tmp_path / "data")
    assert fit(tmp_path / "data", tmp_path / "run") == 0
    folder = tmp_path / "tiffs"
    folder.mkdir()
    image = folder / "part.tiff"
    Image.fromarray(np.full((30, 40, 3), 90, np.uint8)).save(image)
    data = image.read_bytes()
    assert (
        main(["predict", "--model", str(tmp_path / "run"), "--out", str(folder), str(image)]) == 2
    )
    assert "would overwrite this input" in one_error_line(capsys)
    assert image.read_bytes() == data and sorted(folder.iterdir()) == [image]
    (tmp_path / "file").write_text("x")
    assert (
        main(
            [
                "predict",
                "--model",
                str(tmp_path / "run"),
                "--out",
                str(tmp_path / "file"),
                str(image),
            ]
        )
        == 2
    )
    assert "must be a folder" in one_error_line(capsys)


def test_a_thin_image_whose_frame_is_too_large_is_refused_from_its_header(tmp_path, capsys):
    """Pad mode frames a 20000 x 3 image in a 20000² square: 400 M pixels, over the 50 M
    limit, refused with one line before the image is decoded and before anything is written."""
    write_mvtec_tree(tmp_path / "data")
    assert fit(tmp_path / "data", tmp_path / "run") == 0
    thin = tmp_path / "thin.png"
    Image.fromarray(np.full((3, 20000, 3), 128, np.uint8)).save(thin)
    out = tmp_path / "maps"
    assert main(["predict", "--model", str(tmp_path / "run"), "--out", str(out), str(thin)]) == 2
    line = one_error_line(capsys)
    assert "thin.png" in line and "--max-pixels" in line and "400,000,000" in line
    assert not out.exists()
    assert (
        main(
            [
                "predict",
                "--model",
                str(tmp_path / "run"),
                "--out",
                str(out),
                str(thin),
                "--max-pixels",
                "500000000",
            ]
        )
        == 0
    )


def test_predict_on_eps_bytes_named_jpg_is_one_line_exit_2(stand_in_gs, run_dir, tmp_path, capsys):
    path = tmp_path / "part.jpg"
    path.write_bytes(EPS)
    assert (
        main(
            [
                "predict",
                "--model",
                str(run_dir),
                "--device",
                "cpu",
                "--out",
                str(tmp_path / "out"),
                str(path),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{path}: {FORMATS_LINE}" in err[0], err
    assert not stand_in_gs.exists()


@pytest.mark.usefixtures("feature_cache")
def test_a_benchmark_model_predicts_with_its_thresholds(tmp_path, capsys):
    write_mvtec_tree(tmp_path / "data", "toy", n_train=16)
    bench = tmp_path / "bench"
    args = ["benchmark", "--data", str(tmp_path / "data"), "--categories", "toy"]
    args += ["--methods", "l2bt", "--calibration", "0.5", "--false-alarm-rate", "0.2"]
    assert main([*args, "--out", str(bench), *TINY_TEACHER, "--epochs", "1"]) == 0
    stored = json.loads((bench / "models/l2bt/toy/thresholds.json").read_text())
    run = bench / "models/l2bt/toy/run"
    assert json.loads((run / "config.json").read_text())["thresholds"] == stored["thresholds"]
    capsys.readouterr()

    test = str(tmp_path / "data/toy/test")
    assert main(["predict", "--model", str(run.parent), "--out", str(tmp_path / "m0"), test]) == 2
    assert f"pass --model {run}" in one_error_line(capsys)
    assert main(["predict", "--model", str(run), "--out", str(tmp_path / "maps"), test]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"wrote 6 maps to .*: \d+\.\d\d images per second", printed)
    assert "images defective (image threshold" in printed


@pytest.mark.usefixtures("feature_cache")
def test_a_run_records_its_depth_and_predict_keeps_it(tmp_path, capsys):
    write_mvtec_tree(tmp_path / "data")
    run = tmp_path / "run"
    fit = ["fit", "--data", str(tmp_path / "data"), "--category", "toy", "--out", str(run)]
    assert main([*fit, *TINY_TEACHER, "--epochs", "1", "--bit-depth", "12"]) == 0
    assert json.loads((run / "config.json").read_text())["bit_depth"] == 12
    rng = np.random.default_rng(1)
    good = save16(tmp_path / "good.png", rng.integers(0, 4096, size=(40, 48)))
    hot = save16(tmp_path / "hot.png", np.full((40, 48), 5000))
    predict = ["predict", "--model", str(run), "--out"]
    assert main([*predict, str(tmp_path / "m1"), str(good)]) == 0
    capsys.readouterr()
    assert main([*predict, str(tmp_path / "m2"), str(hot)]) == 2
    line = one_error_line(capsys)
    assert str(hot) in line and "12-bit" in line
    assert not (tmp_path / "m2").exists()
    assert main([*predict, str(tmp_path / "m3"), "--bit-depth", "16", str(good)]) == 2
    assert "--bit-depth 16 differs" in one_error_line(capsys)


def test_a_run_without_thresholds_predicts_as_before(tmp_path, capsys):
    write_mvtec_tree(tmp_path / "data")
    assert fit(tmp_path / "data", tmp_path / "run") == 0  # 6 images: fewer than 40
    assert "fewer than 40" in capsys.readouterr().out
    assert json.loads((tmp_path / "run/config.json").read_text())["thresholds"] is None
    maps = tmp_path / "maps"
    assert (
        main(
            [
                "predict",
                "--model",
                str(tmp_path / "run"),
                "--out",
                str(maps),
                str(tmp_path / "data/toy/test"),
            ]
        )
        == 0
    )
    assert "no thresholds" in capsys.readouterr().out
    assert list(read_csv(maps / "scores.csv")[0]) == ["key", "score"]
    assert not (maps / "regions.csv").exists() and not list(maps.rglob("*_mask.png"))


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))
