"""What a newcomer meets: --version, defaults in every --help, a benchmark's model usable
by predict (with its thresholds), images per second, and an offline /docs page."""

import argparse
import json
import re

import pytest

from helpers import TINY_TEACHER, one_error_line, write_mvtec_tree
from l2bt import __version__
from l2bt.cli import build_parser, main


def test_version(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.strip() == f"l2bt {__version__}"


def option_actions(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from ((f"{name} {option}", a) for option, a in option_actions(sub))
        elif action.option_strings:
            yield action.option_strings[0], action


def test_every_option_with_a_default_shows_it_in_help():
    checked = 0
    for name, action in option_actions(build_parser()):
        if action.default in (None, False, argparse.SUPPRESS):
            continue
        assert action.help and "default" in action.help, name
        checked += 1
    assert checked > 30
    text = build_parser()._subparsers._group_actions[0].choices["fit"].format_help()
    assert re.search(r"--epochs EPOCHS\s+default: 50", text)
    assert "default: 0.0001" in text


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


def test_docs_is_an_offline_page_listing_the_endpoints():
    from fastapi.testclient import TestClient

    from l2bt.run import RunDescription
    from l2bt.serve import create_app

    class Nothing:
        record = RunDescription("nothing", teacher=None, weights_id=None, embed_dim=None)

        def predict_maps(self, images):
            raise AssertionError("not called")

        def describe(self):
            return self.record.to_dict()

    client = TestClient(create_app(Nothing(), "x"))
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert not re.search(r"https?://", page.text)  # nothing loaded from elsewhere
    for endpoint in ("POST /v1/predict?map=…&amp;mask=…", "GET /v1/health", "GET /v1/model"):
        assert endpoint in page.text
    assert "href='/openapi.json'" in page.text
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/redoc").status_code == 404
