"""`l2bt predict` (cli/predict.py)."""

from __future__ import annotations

from helpers import EPS, FORMATS_LINE
from l2bt.cli import main


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
