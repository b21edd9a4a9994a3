"""cli/main.py: --version and the defaults in every --help; operating-system errors (full
disk, not a folder, not permitted, exists) are one plain line naming the path and the
problem, exit 2, with nothing half-written (issue 19, item 4).

Tests run as root, for whom chmod forbids nothing: a full disk is RLIMIT_FSIZE in a child
process (Python ignores SIGXFSZ, so a write past the limit fails with EFBIG, as one past
a full disk fails with ENOSPC); a folder that cannot be made is one under a regular file
(ENOTDIR) or under /sys (EPERM, where the system forbids it)."""

import argparse
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import tifffile

from helpers import TINY_TEACHER, one_error_line, write_mvtec_tree
from l2bt import __version__
from l2bt.cli import build_parser, main
from l2bt.cli.main import os_problem

SRC = str(Path(__file__).resolve().parents[1] / "src")
pytestmark = pytest.mark.usefixtures("feature_cache")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("oserrors")
    write_mvtec_tree(root / "data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("L2BT_CACHE_DIR", str(root / "cache"))
        assert fit(root, root / "run") == 0
    return root


def fit(root, out, *extra):
    argv = ["fit", "--data", str(root / "data"), "--category", "toy", "--out", str(out)]
    return main([*argv, *TINY_TEACHER, "--epochs", "1", *extra])


def cli_with_file_limit(argv, limit_bytes, cache):
    """`l2bt ARGV` in a child whose files cannot grow past `limit_bytes`."""

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    env = {**os.environ, "PYTHONPATH": SRC, "L2BT_CACHE_DIR": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "l2bt", *argv],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=limit,
        timeout=300,
    )


def the_error_line(stderr):
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, stderr
    return errors[0]


def test_predict_on_a_full_disk_is_one_line_and_leaves_no_partial_file(run, tmp_path):
    images = run / "data/toy/test/good"
    out = tmp_path / "maps"
    argv = ["predict", "--model", str(run / "run"), "--out", str(out), str(images)]
    done = cli_with_file_limit(argv, 4096, run / "cache")  # a 40 × 60 map is 9.6 kB
    assert done.returncode == 2, done.stderr
    line = the_error_line(done.stderr)
    assert line.startswith("l2bt predict: error: ")
    assert "File too large" in line or "is the disk full?" in line
    assert str(out / "good") in line  # the map it could not write
    written = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in written if p.name.startswith(".")]  # no temporary left
    for path in written:  # what was written is whole
        assert path.suffix != ".tiff" or tifffile.imread(path).size > 0


def test_fit_on_a_full_disk_is_one_line_and_writes_no_cache_entry(run, tmp_path):
    argv = ["fit", "--data", str(run / "data"), "--category", "toy", "--out"]
    argv += [str(tmp_path / "run"), *TINY_TEACHER, "--epochs", "1"]
    done = cli_with_file_limit(argv, 4096, tmp_path / "cache")
    assert done.returncode == 2, done.stderr
    line = the_error_line(done.stderr)
    assert "File too large" in line and str(tmp_path / "cache") in line
    assert not (tmp_path / "run").exists()
    assert not list((tmp_path / "cache").iterdir())


def test_fit_whose_students_do_not_fit_on_the_disk_is_one_line(run, tmp_path):
    """The features come from the cache, the 3.5 MB students file cannot be written:
    safetensors' own error becomes the operating system's, in one line."""
    argv = ["fit", "--data", str(run / "data"), "--category", "toy", "--out"]
    argv += [str(tmp_path / "run"), *TINY_TEACHER, "--epochs", "1"]
    done = cli_with_file_limit(argv, 1 << 20, run / "cache")
    assert done.returncode == 2, done.stderr
    line = the_error_line(done.stderr)
    assert "File too large" in line and "students.safetensors" in line
    assert not (tmp_path / "run").exists()
    assert not [p for p in tmp_path.iterdir() if ".l2bt-tmp" in p.name]  # no staging left


def blocker(tmp_path):
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    return path


@pytest.mark.parametrize("verb", ["predict", "fit", "fit --cache-dir", "evaluate", "export"])
def test_an_output_under_a_regular_file_is_one_line(run, tmp_path, capsys, verb):
    under = blocker(tmp_path) / "sub"
    model, data = str(run / "run"), str(run / "data")
    images = str(run / "data/toy/test/good")
    if verb == "predict":
        code = main(["predict", "--model", model, "--out", str(under), images])
    elif verb == "fit":
        code = fit(run, under)
    elif verb == "fit --cache-dir":
        os.environ["L2BT_CACHE_DIR"] = str(under)  # undone by the feature_cache fixture
        code = fit(run, tmp_path / "run")
    elif verb == "evaluate":
        maps = tmp_path / "maps"
        assert (
            main(["predict", "--model", model, "--out", str(maps / "toy"), data + "/toy/test"]) == 0
        )
        argv = ["evaluate", "--data", data, "--category", "toy", "--maps", str(maps)]
        capsys.readouterr()
        code = main([*argv, "--out", str(under / "m.json")])
    else:
        capsys.readouterr()
        code = main(["export", "--model", model, "--out", str(under / "model.onnx")])
    assert code == 2
    line = one_error_line(capsys)
    said = ("Not a directory", "File exists")  # mkdir -p names the file in the way
    assert str(under.parent) in line and any(s in line for s in said), line


def test_fit_out_naming_an_existing_file_is_one_line(run, tmp_path, capsys):
    path = blocker(tmp_path)
    assert fit(run, path) == 2
    line = one_error_line(capsys)
    assert str(path) in line and "Not a directory" in line
    assert path.read_text() == "not a folder"


def test_a_folder_the_system_forbids_is_one_line(run, tmp_path, capsys):
    target = Path("/sys/l2bt-test-out")
    try:
        target.mkdir()
    except OSError:
        pass
    else:
        target.rmdir()
        pytest.skip("/sys is writable here")
    images = str(run / "data/toy/test/good")
    assert main(["predict", "--model", str(run / "run"), "--out", str(target), images]) == 2
    line = one_error_line(capsys)
    assert str(target) in line and "not permitted" in line


def test_os_problem_lines():
    assert os_problem(OSError(28, "No space left on device", "/x/m.tiff")) == (
        "/x/m.tiff: No space left on device"
    )
    assert os_problem(OSError(18, "Invalid cross-device link", "/a", None, "/b")) == (
        "/a -> /b: Invalid cross-device link"
    )
    assert os_problem(OSError(5, "Input/output error")) == "Input/output error"


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
