"""`l2bt evaluate` on hurried users' files (issue 19, item 6): 0/1 ground truth,
scores.csv with a BOM or binary, multi-page map TIFFs."""

import numpy as np
import tifffile
from PIL import Image

from helpers import one_error_line, write_maps, write_mvtec_tree
from l2bt.cli import main


def evaluate(data, maps, out=None):
    argv = ["evaluate", "--data", str(data), "--category", "toy", "--maps", str(maps)]
    return main([*argv, *(["--out", str(out)] if out else [])])


def setup(tmp_path):
    data = tmp_path / "data"
    write_mvtec_tree(data)
    split = write_maps(data, tmp_path / "maps", noise=0.1)
    return data, split


def test_zero_one_masks_are_refused_with_one_line(tmp_path, capsys):
    data, _ = setup(tmp_path)
    for path in (data / "toy/ground_truth/spot").glob("*.png"):
        Image.fromarray((np.asarray(Image.open(path)) > 0).astype(np.uint8)).save(path)
    capsys.readouterr()
    assert evaluate(data, tmp_path / "maps", tmp_path / "m.json") == 2
    line = one_error_line(capsys)
    assert "ground_truth/spot" in line and "only 0 and 1" in line and "0/255" in line
    assert not (tmp_path / "m.json").exists()


def test_empty_masks_of_zeros_alone_are_not_called_zero_one(tmp_path, capsys):
    """All-zero masks (max 0) are not the 0/1 mistake: evaluation goes on."""
    data, _ = setup(tmp_path)
    for path in (data / "toy/ground_truth/spot").glob("*.png"):
        Image.fromarray(np.zeros_like(np.asarray(Image.open(path)))).save(path)
    capsys.readouterr()
    evaluate(data, tmp_path / "maps")
    assert "only 0 and 1" not in capsys.readouterr().err


def scores_text(split, score=0.5):
    return "key,score\n" + "".join(f"{s.key},{score}\n" for s in split.test)


def test_scores_csv_with_a_bom_is_read_like_without(tmp_path):
    data, split = setup(tmp_path)
    scores = tmp_path / "maps/toy/scores.csv"
    outputs = []
    for prefix in (b"", b"\xef\xbb\xbf"):
        scores.write_bytes(prefix + scores_text(split).encode())
        assert evaluate(data, tmp_path / "maps", tmp_path / "m.json") == 0
        outputs.append((tmp_path / "m.json").read_text())
    assert outputs[0] == outputs[1]
    assert '"i_auroc": 0.5' in outputs[0]  # every score equal: the file's scores were used


def test_binary_scores_csv_is_one_line(tmp_path, capsys):
    data, _ = setup(tmp_path)
    scores = tmp_path / "maps/toy/scores.csv"
    for junk in (bytes(range(256)) * 4, b"key,score\n\x00\x01\x02,0.5\n"):
        scores.write_bytes(junk)
        capsys.readouterr()
        assert evaluate(data, tmp_path / "maps") == 2
        line = one_error_line(capsys)
        assert str(scores) in line and "not a" in line and "text file" in line


def test_multi_page_map_is_refused(tmp_path, capsys):
    data, split = setup(tmp_path)
    sample = split.test[-1]
    path = tmp_path / "maps/toy" / f"{sample.key}.tiff"
    page = tifffile.imread(path)
    with tifffile.TiffWriter(path) as tif:  # two separate pages (two series)
        tif.write(page, metadata=None)
        tif.write(np.zeros_like(page), metadata=None)
    capsys.readouterr()
    assert evaluate(data, tmp_path / "maps") == 2
    line = one_error_line(capsys)
    assert str(path) in line and "has 2 pages" in line
