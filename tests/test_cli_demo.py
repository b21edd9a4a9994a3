from l2bt.cli import main
from l2bt.teacher import weights as weight_files


def test_demo_runs_offline_with_a_random_teacher(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("L2BT_CACHE_DIR", str(tmp_path / "cache"))
    assert (
        main(
            [
                "demo",
                "--out",
                str(tmp_path / "demo"),
                "--weights",
                "random",
                "--teacher",
                "dinov2_vits14",
                "--size",
                "256",
                "--n-train",
                "3",
                "--n-test",
                "3",
                "--image-size",
                "56",
                "--epochs",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "meaningless" in out and "results.md" in out
    assert (tmp_path / "demo/benchmark/results.md").is_file()
    assert (tmp_path / "demo/benchmark/plots/aupro_by_size_synthetic.png").is_file()


def test_demo_without_weights_offline_is_one_line_naming_the_url(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(weight_files, "OFFICIAL_BASE_URL", "http://127.0.0.1:9/dinov2")
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "dinov2_vits14_reg4_pretrain.pth" in err[0] and "--weights" in err[0]
    assert not (tmp_path / "demo").exists()
