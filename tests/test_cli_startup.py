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
