import csv
import json

import pytest
import tifffile
from PIL import Image

from helpers import SHARED_DATA, TINY_TEACHER, write_mvtec_tree
from l2bt.benchmark import runner
from l2bt.benchmark.overlays import ranked_keys
from l2bt.cli import main
from l2bt.maps.layout import MapsFolder, map_shape
from l2bt.maps.overlay import colour_bar_height
from l2bt.maps.tables import ScoreRow, read_score_table
from l2bt.view.gallery import build_section, find_sections

TINY = [*TINY_TEACHER, "--epochs", "1"]
SPEC_KEYS = {
    "category",
    "n_images",
    "n_regions",
    "size_quantiles_px",
    "i_auroc",
    "p_auroc",
    "aupro",
    "robustness",
}


pytestmark = pytest.mark.usefixtures("feature_cache")


def copy_maps_as_external(bench, method, category, target):
    """Another tool's maps: here, l2bt's maps copied to a folder of their own."""
    for path in (bench / "maps" / method / category).rglob("*.tiff"):
        out = target / category / path.relative_to(bench / "maps" / method / category)
        out.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(out, tifffile.imread(path))


def check_overlays(maps):
    """The highest-, median- and lowest-scoring images have overlays the size predict's
    have (the image, the colour bar below), and overlays.json names them in score order."""
    chosen = json.loads((maps / "overlays.json").read_text())
    scores = sorted((-row.score, row.key) for row in read_score_table(maps / "scores.csv").rows())
    ordered = [key for _, key in scores]
    assert chosen == {
        "highest": ordered[0],
        "median": ordered[len(ordered) // 2],
        "lowest": ordered[-1],
    }
    assert {p.relative_to(maps).as_posix() for p in maps.rglob("*_overlay.png")} == {
        f"{key}_overlay.png" for key in chosen.values()
    }
    for key in chosen.values():
        height, width = map_shape(MapsFolder(maps).map(key))
        with Image.open(MapsFolder(maps).overlay(key)) as picture:
            assert picture.format == "PNG" and picture.mode == "RGB"
            assert picture.size == (width, height + colour_bar_height(width))


def test_ranked_keys_break_ties_by_key_and_take_the_lower_middle():
    rows = [ScoreRow(k, s, None) for k, s in [("d", 0.2), ("a", 0.9), ("c", 0.5), ("b", 0.5)]]
    assert ranked_keys(rows) == {"highest": "a", "median": "c", "lowest": "d"}


def test_every_method_runs_and_the_table_has_every_column(tmp_path, capsys):
    write_mvtec_tree(tmp_path / "data", "toy")
    write_mvtec_tree(tmp_path / "data", "other", sizes=((50, 64), (43, 57)))
    bench = tmp_path / "bench"
    assert (
        main(
            [
                "benchmark",
                "--data",
                str(tmp_path / "data"),
                "--categories",
                "toy",
                "--methods",
                "l2bt",
                "--out",
                str(tmp_path / "first"),
                *TINY,
            ]
        )
        == 0
    )
    copy_maps_as_external(tmp_path / "first", "l2bt", "toy", tmp_path / "ext")
    methods = f"l2bt,l2bt@28,patchcore,external:copy={tmp_path / 'ext'}"
    assert (
        main(
            [
                "benchmark",
                "--data",
                str(tmp_path / "data"),
                "--categories",
                "toy",
                "--methods",
                methods,
                "--out",
                str(bench),
                *TINY,
            ]
        )
        == 0
    )
    with open(bench / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} == {"l2bt", "l2bt@28", "patchcore", "copy"}
    for name in (
        "I-AUROC",
        "P-AUROC",
        "AUPRO@30% all",
        "AUPRO@1% q1",
        "rho@10%",
        "infer s/img",
        "peak MiB",
        "train s",
    ):
        assert name in rows[0]
    for method in ("l2bt", "l2bt@28", "patchcore"):
        row = next(r for r in rows if r["method"] == method)
        assert all(row[c] != "" for c in ("I-AUROC", "infer s/img", "peak MiB", "train s"))
        result = json.loads((bench / "results" / method / "toy.json").read_text())
        assert set(result) >= SPEC_KEYS and result["run"]["device"].startswith("cpu")
    # The external copy of l2bt's maps scores exactly as l2bt did.
    l2bt = json.loads((bench / "results/l2bt/toy.json").read_text())
    copy = json.loads((bench / "results/copy/toy.json").read_text())
    assert copy["aupro"] == l2bt["aupro"] and copy["p_auroc"] == l2bt["p_auroc"]
    for plot in ("pro_curves_toy.png", "aupro_by_size_toy.png", "smallest_defects_toy.png"):
        assert (bench / "plots" / plot).stat().st_size > 1000
    assert json.loads((bench / "benchmark.json").read_text())["methods"][0] == "l2bt"


def test_a_rerun_redoes_nothing_and_a_killed_run_keeps_what_it_finished(tmp_path, monkeypatch):
    write_mvtec_tree(tmp_path / "data", "a")
    write_mvtec_tree(tmp_path / "data", "b")
    args = [
        "benchmark",
        "--data",
        str(tmp_path / "data"),
        "--methods",
        "l2bt",
        "--out",
        str(tmp_path / "bench"),
        *TINY,
    ]
    real_run_job = runner.run_job
    calls = []

    def dies_on_the_second(config, job, *rest):
        calls.append(job.category)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run_job(config, job, *rest)

    monkeypatch.setattr(runner, "run_job", dies_on_the_second)
    assert main(args) == 130
    assert (tmp_path / "bench/results/l2bt/a.json").is_file()
    assert not (tmp_path / "bench/results/l2bt/b.json").exists()
    assert "Not finished yet: l2bt/b" in (tmp_path / "bench/results.md").read_text()
    calls.clear()
    monkeypatch.setattr(
        runner,
        "run_job",
        lambda c, j, *rest: (calls.append(j.category), real_run_job(c, j, *rest))[1],
    )
    assert main(args) == 0
    assert calls == ["b"]  # a was kept
    calls.clear()
    assert main(args) == 0
    assert calls == []


def test_an_unknown_method_is_one_line(tmp_path, capsys):
    write_mvtec_tree(tmp_path / "data")
    assert (
        main(
            [
                "benchmark",
                "--data",
                str(tmp_path / "data"),
                "--methods",
                "l2bt,magic",
                "--out",
                str(tmp_path / "bench"),
                *TINY,
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "magic" in err[0]
    assert not (tmp_path / "bench").exists()


@pytest.mark.slow
@pytest.mark.needs_data
def test_all_methods_on_real_magnetic_tile_images(tmp_path):
    assert (
        main(
            [
                "benchmark",
                "--data",
                str(SHARED_DATA),
                "--categories",
                "magnetic_tile_mini",
                "--teacher",
                "dinov2_vits14",
                "--weights",
                "random",
                "--image-size",
                "224",
                "--epochs",
                "1",
                "--methods",
                "l2bt,l2bt@112,patchcore",
                "--out",
                str(tmp_path / "bench"),
            ]
        )
        == 0
    )
    with open(tmp_path / "bench/results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["l2bt", "l2bt@112", "patchcore"]
    assert all(r["AUPRO@30% all"] != "" and r["AUPRO@30% q1"] != "" for r in rows)
    result = json.loads((tmp_path / "bench/results/l2bt/magnetic_tile_mini.json").read_text())
    assert result["n_images"] == 35 and result["n_regions"] >= 25


def test_every_method_gets_thresholds_the_same_way(tmp_path):
    write_mvtec_tree(tmp_path / "data", "toy", n_train=16)
    bench = tmp_path / "bench"
    assert (
        main(
            [
                "benchmark",
                "--data",
                str(tmp_path / "data"),
                "--categories",
                "toy",
                "--methods",
                "l2bt,patchcore",
                "--calibration",
                "0.5",
                "--false-alarm-rate",
                "0.2",
                "--out",
                str(bench),
                *TINY,
            ]
        )
        == 0
    )
    for method in ("l2bt", "patchcore"):
        result = json.loads((bench / "results" / method / "toy.json").read_text())
        stored = json.loads((bench / "models" / method / "toy/thresholds.json").read_text())
        assert result["thresholds"]["n_calibration"] == 8
        assert result["thresholds"]["image"] == stored["thresholds"]["image"]
        assert result["run"]["n_train"] == 8 and result["run"]["calibration"]["n_calibration"] == 8
        # the threshold is the k-th smallest calibration score, k = ceil(9 · 0.8) = 8
        assert sorted(stored["image_scores"])[7] == stored["thresholds"]["image"]
        distribution = result["score_distribution"]
        assert len(distribution["calibration"]) == 8
        assert len(distribution["test_good"]) == 3 and len(distribution["test_defective"]) == 3
        maps = bench / "maps" / method / "toy"
        assert len(list(maps.rglob("*_mask.png"))) == 6 and (maps / "regions.csv").is_file()
        with open(maps / "scores.csv") as f:
            assert {r["verdict"] for r in csv.DictReader(f)} <= {"good", "defective"}
        check_overlays(maps)
    for source in find_sections(bench):  # `l2bt view` links the overlays the benchmark wrote
        chosen = json.loads((source.maps_dir / "overlays.json").read_text())
        linked = {e.key for e in build_section(source, bench).entries if e.overlay is not None}
        assert linked == set(chosen.values())
        assert (bench / "plots/scores_toy.png").stat().st_size > 1000
    report = (bench / "results.md").read_text()
    assert "## Decisions" in report and "split-conformal at a false-alarm rate of 0.2" in report
    assert "Oracle" in report


def test_a_benchmark_folder_is_not_continued_with_other_settings(tmp_path, capsys):
    write_mvtec_tree(tmp_path / "data", "toy")
    args = [
        "benchmark",
        "--data",
        str(tmp_path / "data"),
        "--methods",
        "l2bt",
        "--out",
        str(tmp_path / "bench"),
        *TINY,
    ]
    assert main(args) == 0
    before = (tmp_path / "bench/benchmark.json").read_text()
    capsys.readouterr()
    assert main([*args[:-1], "2"]) == 2  # --epochs 2 instead of 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "settings.epochs" in err[0] and "benchmark.json" in err[0]
    assert (tmp_path / "bench/benchmark.json").read_text() == before
    assert main([*args, "--batch-size", "2"]) == 0  # a setting that changes no result
