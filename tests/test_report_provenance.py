"""What made the figures: results.md and `l2bt evaluate` say teacher, weights, size,
mode, epochs, precision and calibration, and warn when the weights are random."""

import json

import pytest

from helpers import TINY_TEACHER, write_mvtec_tree
from l2bt.cli import main
from l2bt.config import TeacherConfig
from l2bt.decisions.thresholds import Thresholds
from l2bt.report.provenance import RANDOM_WARNING, UNKNOWN_MODEL, from_run
from l2bt.run import RunDescription

pytestmark = pytest.mark.usefixtures("feature_cache")


def test_a_random_weights_benchmark_says_so_and_names_what_made_it(tmp_path):
    write_mvtec_tree(tmp_path / "data", "toy")
    bench = tmp_path / "bench"
    args = ["benchmark", "--data", str(tmp_path / "data"), "--categories", "toy"]
    args += ["--methods", "l2bt", "--out", str(bench), *TINY_TEACHER, "--epochs", "1"]
    assert main(args) == 0
    report = (bench / "results.md").read_text()
    head = report.split("| method")[0]  # everything above the first table
    assert RANDOM_WARNING in head
    assert "weights: **random**" in head
    assert "teacher: dinov2_vits14" in head
    assert "input: 56 px, mode pad" in head
    assert "epochs: 1, precision: fp32" in head
    assert "calibration: the default share" in head
    described = json.loads((bench / "benchmark.json").read_text())
    assert described["teacher_weights_id"] == "random"
    assert described["settings"]["teacher"]["image_size"] == 56
    assert described["settings"]["epochs"] == 1


def test_evaluate_names_the_model_that_predict_recorded(tmp_path, capsys):
    write_mvtec_tree(tmp_path / "data", "toy")
    data, run, maps = tmp_path / "data", tmp_path / "run", tmp_path / "maps"
    fit = ["fit", "--data", str(data), "--category", "toy", "--out", str(run)]
    assert main([*fit, *TINY_TEACHER, "--epochs", "2", "--input-mode", "aspect"]) == 0
    predict = ["predict", "--model", str(run), "--out", str(maps / "toy"), str(data / "toy/test")]
    assert main(predict) == 0
    assert json.loads((maps / "toy/run.json").read_text())["model"] == str(run.resolve())
    capsys.readouterr()
    assert main(["evaluate", "--data", str(data), "--category", "toy", "--maps", str(maps)]) == 0
    printed = capsys.readouterr().out
    assert printed.index(RANDOM_WARNING) < printed.index("AUROC")
    assert "input: 56 px, mode aspect" in printed
    assert "epochs: 2, precision: fp32" in printed
    assert str(run.resolve()) in printed

    (maps / "toy/run.json").unlink()
    assert main(["evaluate", "--data", str(data), "--category", "toy", "--maps", str(maps)]) == 0
    printed = capsys.readouterr().out
    assert UNKNOWN_MODEL in printed
    assert RANDOM_WARNING not in printed


def test_a_checkpoint_is_named_by_its_hash_and_no_warning():
    thresholds = Thresholds(1.0, 2.0, 0.01, 0.01, 20, tuple(f"{i}.png" for i in range(20)))
    record = RunDescription(
        "l2bt", TeacherConfig(), "0123456789abcdef", 768, "bf16", thresholds=thresholds
    )
    lines = from_run(record).lines()
    assert RANDOM_WARNING not in lines
    assert "- teacher: dinov2_vitb14_reg, weights: checkpoint sha256 0123456789abcdef…" in lines
    assert "- epochs: unknown, precision: bf16" in lines
    assert "- calibration: 20 defect-free images, false-alarm rate 0.01" in lines
