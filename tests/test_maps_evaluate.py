import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from helpers import write_maps, write_mvtec_tree
from l2bt.cli import main
from l2bt.maps.evaluate import evaluate_maps
from l2bt.metrics import evaluate_arrays

SPEC_KEYS = {
    "category",
    "n_images",
    "n_regions",
    "size_quantiles_px",
    "i_auroc",
    "p_auroc",
    "aupro",
    "robustness",
    "p_ap",
    "aupro_abs",
    "aupimo",
    "oracle",
}
LIMITS = {"0.3", "0.1", "0.05", "0.01"}


def test_evaluate_writes_the_spec_json(tmp_path, capsys):
    write_mvtec_tree(tmp_path / "data")
    write_maps(tmp_path / "data", tmp_path / "maps", noise=0.1)
    out = tmp_path / "m.json"
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(tmp_path / "data"),
                "--category",
                "toy",
                "--maps",
                str(tmp_path / "maps"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert set(result) == SPEC_KEYS
    assert set(result["aupro"]) == LIMITS == set(result["robustness"])
    assert all(set(v) == {"q1", "q2", "q3", "all"} for v in result["aupro"].values())
    assert result["n_images"] == 6 and result["n_regions"] == 3
    # Perfect maps (defects > 1 > noise): every metric is 1.
    assert result["p_auroc"] == pytest.approx(1.0) and result["i_auroc"] == pytest.approx(1.0)
    assert result["aupro"]["0.01"]["all"] == pytest.approx(1.0)
    assert "AUPRO" in capsys.readouterr().out


def test_evaluate_equals_the_metrics_on_the_same_arrays(tmp_path):
    write_mvtec_tree(tmp_path / "data")
    split = write_maps(tmp_path / "data", tmp_path / "maps", noise=1.5, seed=3)
    result = evaluate_maps(split, tmp_path / "maps")
    maps, masks = [], []
    for s in split.test:
        maps.append(tifffile.imread(tmp_path / "maps/toy" / f"{s.key}.tiff"))
        masks.append(
            np.zeros(maps[-1].shape, bool)
            if s.mask is None
            else np.asarray(Image.open(s.mask)) > 127
        )
    direct = evaluate_arrays(maps, masks)
    assert result.aupro == direct.aupro and result.p_auroc == direct.p_auroc
    assert result.i_auroc == direct.i_auroc and result.n_images == 6


def test_scores_csv_is_used_for_image_auroc(tmp_path):
    write_mvtec_tree(tmp_path / "data")
    split = write_maps(tmp_path / "data", tmp_path / "maps", noise=0.1)
    # Scores that rank every good image above every defective one: I-AUROC 0.
    lines = ["key,score"] + [f"{s.key},{0.0 if s.is_anomalous else 1.0}" for s in split.test]
    (tmp_path / "maps/toy/scores.csv").write_text("\n".join(lines) + "\n")
    assert evaluate_maps(split, tmp_path / "maps").i_auroc == 0.0


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    return err[0]


def test_a_map_of_the_wrong_size_is_named_and_nothing_is_written(tmp_path, capsys):
    write_mvtec_tree(tmp_path / "data")
    write_maps(tmp_path / "data", tmp_path / "maps")
    bad = tmp_path / "maps/toy/test/spot/001.tiff"
    tifffile.imwrite(bad, np.zeros((10, 10), np.float32))
    out = tmp_path / "m.json"
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(tmp_path / "data"),
                "--category",
                "toy",
                "--maps",
                str(tmp_path / "maps"),
                "--out",
                str(out),
            ]
        )
        == 2
    )
    line = one_error_line(capsys)
    assert "001.tiff" in line and "10x10" in line
    assert not out.exists()


def test_a_missing_map_is_named(tmp_path, capsys):
    write_mvtec_tree(tmp_path / "data")
    write_maps(tmp_path / "data", tmp_path / "maps")
    (tmp_path / "maps/toy/test/good/002.tiff").unlink()
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(tmp_path / "data"),
                "--category",
                "toy",
                "--maps",
                str(tmp_path / "maps"),
            ]
        )
        == 2
    )
    assert "002.tiff" in one_error_line(capsys)


def test_a_mask_of_the_wrong_size_is_named(tmp_path, capsys):
    write_mvtec_tree(tmp_path / "data")
    write_maps(tmp_path / "data", tmp_path / "maps")
    mask = tmp_path / "data/toy/ground_truth/spot/000_mask.png"
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(mask)
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(tmp_path / "data"),
                "--category",
                "toy",
                "--maps",
                str(tmp_path / "maps"),
            ]
        )
        == 2
    )
    assert "000_mask.png" in one_error_line(capsys)


def test_non_finite_values_in_a_map_are_named(tmp_path, capsys):
    write_mvtec_tree(tmp_path / "data")
    write_maps(tmp_path / "data", tmp_path / "maps")
    bad = tmp_path / "maps/toy/test/good/001.tiff"
    broken = tifffile.imread(bad)
    broken[3, 4] = np.nan
    tifffile.imwrite(bad, broken)
    out = tmp_path / "m.json"
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(tmp_path / "data"),
                "--category",
                "toy",
                "--maps",
                str(tmp_path / "maps"),
                "--out",
                str(out),
            ]
        )
        == 2
    )
    line = one_error_line(capsys)
    assert "001.tiff" in line and "non-finite" in line
    assert not out.exists()


def test_a_scores_file_missing_an_image_is_named(tmp_path, capsys):
    write_mvtec_tree(tmp_path / "data")
    split = write_maps(tmp_path / "data", tmp_path / "maps")
    lines = ["key,score"] + [f"{s.key},1.0" for s in split.test[1:]]
    (tmp_path / "maps/toy/scores.csv").write_text("\n".join(lines) + "\n")
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(tmp_path / "data"),
                "--category",
                "toy",
                "--maps",
                str(tmp_path / "maps"),
            ]
        )
        == 2
    )
    line = one_error_line(capsys)
    assert "scores.csv" in line and split.test[0].key in line


def test_float64_maps_are_read_without_rounding(tmp_path):
    write_mvtec_tree(tmp_path / "data")
    split = write_maps(tmp_path / "data", tmp_path / "maps", noise=0.5, seed=1)
    for s in split.test:  # rewrite every map as float64
        path = tmp_path / "maps/toy" / f"{s.key}.tiff"
        tifffile.imwrite(path, tifffile.imread(path).astype(np.float64) + 1e-12)
    result = evaluate_maps(split, tmp_path / "maps")
    assert result.p_auroc is not None and result.aupro[0.3]["all"] is not None
