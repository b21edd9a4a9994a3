"""`l2bt check-data` (cli/check_data.py): every problem of a tree reported at once; an
unknown category or dataset is one line."""

import numpy as np
from PIL import Image

from helpers import write_mvtec_tree
from l2bt.cli import main


def errors(capsys) -> list[str]:
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and not any("Traceback" in line for line in lines)
    return lines


def check(tmp_path, *extra):
    return main(["check-data", "--data", str(tmp_path / "data"), "--category", "toy", *extra])


def test_check_data_reports_every_problem_at_once(tmp_path, capsys):
    base = write_mvtec_tree(tmp_path / "data")
    (base / "ground_truth/spot/001_mask.png").unlink()  # anomalous image without a mask
    save(base / "ground_truth/spot/000_mask.png", np.zeros((5, 5), np.uint8))  # wrong size
    data = (base / "test/good/000.png").read_bytes()
    (base / "test/good/000.png").write_bytes(data[: len(data) // 2])  # truncated
    (base / "test/good/001.jpg").write_bytes(b"not an image")  # unreadable, duplicate stem
    assert check(tmp_path) == 2
    lines = errors(capsys)
    text = "\n".join(lines)
    assert "001.png: anomalous image without a mask" in text
    assert "000_mask.png: mask is 5x5" in text
    assert "000.png: cannot read image" in text
    assert "duplicate image name" in text and "001.jpg" in text
    assert len([line for line in lines if ": " in line]) >= 5


def test_unknown_category_and_dataset(tmp_path, capsys):
    write_mvtec_tree(tmp_path / "data")
    assert check(tmp_path, "--dataset", "nope") == 2
    assert "unknown dataset" in errors(capsys)[0]
    assert main(["check-data", "--data", str(tmp_path / "data"), "--category", "absent"]) == 2
    assert "absent" in errors(capsys)[0]


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
