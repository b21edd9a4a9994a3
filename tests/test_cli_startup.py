"""The command line answers at once: building the parser imports no heavy library, and
the names it lists by hand match the library's own."""

import json
import subprocess
import sys

HEAVY = ("torch", "numpy", "scipy", "PIL", "matplotlib", "tifffile")


def imported_after(code: str) -> set[str]:
    """Top-level packages in sys.modules after running `code` in a fresh interpreter."""
    report = "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    script = f"{code}\nimport json, sys\n{report}"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_building_the_parser_imports_nothing_heavy():
    loaded = imported_after("import l2bt.cli\nl2bt.cli.build_parser()")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_help_lists_every_verb(capsys):
    import pytest

    from l2bt.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for verb in ("fit", "predict", "evaluate", "benchmark", "check-data", "make-synthetic", "demo"):
        assert verb in text


def test_names_listed_by_the_cli_match_the_library():
    from l2bt.cli import benchmark, common
    from l2bt.config import INPUT_MODES, PRECISIONS
    from l2bt.data import DATASETS
    from l2bt.methods import METHOD_NAMES
    from l2bt.methods.registry import INPUT_MODE_SUFFIXES

    assert set(common.DATASETS) == set(DATASETS)
    assert common.PRECISIONS == PRECISIONS
    assert common.INPUT_MODES == INPUT_MODES
    assert benchmark.METHOD_NAMES == METHOD_NAMES
    assert tuple(f"+{mode}" for mode in INPUT_MODES) == INPUT_MODE_SUFFIXES


def _answer_without_torch(argv: list[str]) -> tuple[int, str, str]:
    """(exit status, stderr, "True" or "False": torch imported) of `l2bt ARGV`, run alone."""
    code = (
        "import sys\nfrom l2bt.cli import main\nstatus = main(sys.argv[1:])\n"
        "print('torch' in sys.modules)\nsys.exit(status)"
    )
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    return done.returncode, done.stderr.strip(), done.stdout.strip().splitlines()[-1]


def test_argument_errors_are_one_line_before_torch(tmp_path):
    from helpers import write_mvtec_tree

    data = write_mvtec_tree(tmp_path / "data").parent
    out, nope = str(tmp_path / "out"), str(tmp_path / "nope")
    fit = ["fit", "--data", str(data), "--category", "toy", "--out", out]
    cases = [
        (["fit", "--data", nope, "--category", "toy", "--out", out], "data folder not found"),
        ([*fit, "--tile-size", "230"], "--tile-size must be a positive multiple"),
        ([*fit, "--input-mode", "tiles", "--tile-size", "224", "--tile-overlap", "223"], "--force"),
        ([*fit, "--patch-batch", "-1"], "--patch-batch"),
        (["benchmark", "--data", nope, "--out", out], "data folder not found"),
        (
            ["predict", "--model", nope, "--out", out, str(data), "--batch-size", "0"],
            "--batch-size",
        ),
        (["calibrate", "--model", nope, "--images", str(data)], "not an l2bt run folder"),
        (["export", "--model", nope, "--out", out], "not an l2bt run folder"),
        (["serve", "--model", nope], "model not found"),
        (["make-synthetic", "--out", out, "--size", "-3"], "--size"),
    ]
    for argv, problem in cases:
        status, err, torch_imported = _answer_without_torch(argv)
        assert status == 2 and len(err.splitlines()) == 1 and problem in err, (argv, err)
        assert torch_imported == "False", argv
