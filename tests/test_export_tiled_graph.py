"""ONNX export of tiles-mode runs (SPEC §8, §11): the in-graph blend against a plain
scatter-add, parity with the torch engine at s = 1 and s < 1 (maps, scores, decisions),
one image size per graph, and the service on the exported file."""

import numpy as np
import pytest
import torch

import l2bt.model
from helpers import encode, one_error_line, teacher_loaded_once, textured_image
from l2bt.cli import main
from l2bt.config import L2BTConfig, TeacherConfig, TileSettings
from l2bt.decisions.thresholds import Thresholds
from l2bt.export.runtime import OnnxRuntimePredictor
from l2bt.export.tiled_graph import place
from l2bt.model import L2BT
from l2bt.tiling import window_starts
from l2bt.training import new_students

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(autouse=True, scope="module")
def one_teacher():
    with teacher_loaded_once(l2bt.model) as teachers:
        yield teachers


def tiles_model(scale: float, seed: int = 3) -> L2BT:
    config = TeacherConfig(
        "dinov2_vits14",
        "random",
        56,
        layers=(1, 3),
        input_mode="tiles",
        tiles=TileSettings(size=28, overlap=7, scale=scale),
    )
    teacher = l2bt.model.load_teacher("dinov2_vits14", "random")
    forward, backward = new_students(teacher.embed_dim, seed)
    return L2BT.from_parts(L2BTConfig(config), teacher, forward, backward, device="cpu")


def scatter_add(pieces: list[np.ndarray], starts: tuple[int, ...], length: int, dim: int):
    """The plain reference of `place`: each piece added into zeros at its start."""
    shape = list(pieces[0].shape)
    shape[dim] = length
    total = np.zeros(shape)
    for piece, start in zip(pieces, starts, strict=True):
        index = [slice(None)] * len(shape)
        index[dim] = slice(start, start + piece.shape[dim])
        total[tuple(index)] += piece
    return total


@pytest.mark.parametrize(
    "length,size,overlap",
    [(28, 28, 7), (29, 28, 7), (97, 28, 7), (131, 28, 27), (60, 14, 0), (1000, 518, 129)],
)
@pytest.mark.parametrize("dim", [0, 1])
def test_place_sums_the_pieces_as_a_scatter_add(length, size, overlap, dim):
    """Integer-valued pieces, so every sum is exact whatever its order (up to 27 pieces
    overlap at a pixel when the overlap is 27 of 28)."""
    starts = window_starts(length, size, overlap)
    generator = np.random.default_rng(length + dim)
    shape = (size, 5) if dim == 0 else (5, size)
    pieces = [generator.integers(-9, 10, shape).astype(np.float64) for _ in starts]
    got = place([torch.from_numpy(p) for p in pieces], starts, length, dim)
    assert np.array_equal(got.numpy(), scatter_add(pieces, starts, length, dim))


def test_place_refuses_a_gap():
    with pytest.raises(ValueError, match="covered by no piece"):
        place([torch.ones(4), torch.ones(4)], (0, 6), 10, dim=0)


def with_thresholds(model: L2BT, image: np.ndarray) -> L2BT:
    """Thresholds inside the image's map range, so the mask has both values."""
    reference = model.predict(image)
    model.thresholds = Thresholds(
        image=reference.score * 0.999,
        pixel=float(np.quantile(reference.anomaly_map, 0.8)),
        false_alarm_rate=0.1,
        guaranteed_rate=0.1,
        n_calibration=9,
        calibration_images=("a.png",),
    )
    return model


@pytest.mark.parametrize("scale,height,width", [(1.0, 60, 90), (0.5, 97, 131), (1.0, 20, 33)])
def test_the_graph_matches_the_torch_engine(tmp_path, capsys, scale, height, width):
    """Several windows at native scale, a rescaled image, and one smaller than a window
    (edge-padded): maps within 1e-3 relative, the same score, mask and verdict."""
    image = textured_image(height, width, seed=width)
    model = with_thresholds(tiles_model(scale), image)
    run = model.save(tmp_path / "run")
    out = tmp_path / "tiles.onnx"
    argv = ["export", "--model", str(run), "--out", str(out), "--image-hw", f"{height},{width}"]
    assert main(argv) == 0
    assert "tiles mode, 28 x 28 teacher input" in capsys.readouterr().out
    engine = OnnxRuntimePredictor(out, device="cpu")
    assert engine.run.graph.image_hw == (height, width)
    got, reference = engine.predict(image), model.predict(image)
    assert got.anomaly_map.shape == (height, width)
    error = np.abs(got.anomaly_map - reference.anomaly_map).max()
    assert error <= 1e-3 * np.abs(reference.anomaly_map).max()
    assert got.score == pytest.approx(reference.score, rel=1e-3)
    assert got.verdict == reference.verdict
    margin = np.abs(reference.anomaly_map - model.thresholds.mask_threshold) > error
    assert np.array_equal(got.mask[margin], reference.mask[margin])
    assert got.mask.any() and not got.mask.all()


def test_one_image_size_per_graph_and_one_line_refusals(tmp_path, capsys):
    from PIL import Image

    run = tiles_model(1.0).save(tmp_path / "run")
    out = tmp_path / "tiles.onnx"
    assert main(["export", "--model", str(run), "--out", str(out)]) == 2
    assert "give --image-hw H,W" in one_error_line(capsys)
    assert main(["export", "--model", str(run), "--out", str(out), "--image-hw", "40,50"]) == 0
    capsys.readouterr()
    wrong = tmp_path / "wrong.png"
    Image.fromarray(textured_image(41, 50, seed=1)).save(wrong)
    for model, extra, problem in (
        (out, [], "cuts its windows for 40 x 50 images, not 41 x 50"),
        (run, ["--engine", "onnxruntime"], "exported for one image size"),
    ):
        argv = ["predict", "--model", str(model), *extra, "--out", str(tmp_path / "o"), str(wrong)]
        assert main(argv) == 2
        line = one_error_line(capsys)
        assert problem in line and str(model) in line
    assert not (tmp_path / "o").exists()


def test_the_service_runs_a_tiles_graph(tmp_path):
    """`l2bt serve --model FILE.onnx` of a tiles run: the exported size answers as the
    engine does, another size is a 400 naming the size the graph takes."""
    pytest.importorskip("fastapi")
    from serving import live_server, post_image

    image = textured_image(40, 50, seed=2)
    run = tiles_model(1.0).save(tmp_path / "run")
    out = tmp_path / "tiles.onnx"
    assert main(["export", "--model", str(run), "--out", str(out), "--image-hw", "40,50"]) == 0
    engine = OnnxRuntimePredictor(out, device="cpu")
    expected = engine.predict(image)
    with live_server(engine) as (client, _):
        good = post_image(client, encode(image))
        wrong = post_image(client, encode(textured_image(50, 40, seed=2)))
    assert good.status_code == 200, good.text
    assert good.json()["score"] == pytest.approx(expected.score, rel=1e-6)
    assert wrong.status_code == 400 and "40 x 50" in wrong.text
