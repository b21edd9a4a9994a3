"""ONNX export and the ONNX Runtime engine: parity with the torch engine on real images,
maps at each image's size, decisions, metadata, `predict --engine`, bad inputs.

Two graphs are exported once each (module fixtures): a random ViT-S/14 teacher at 224 px
with thresholds (through the engine's on-the-fly export, cached in the run folder) and
at 448 px without (through `l2bt export`); layers 1 and 3 (four blocks) keep them quick.
"""

import copy
import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import l2bt.model
from helpers import SHARED_DATA, encode, one_error_line, textured_image
from l2bt.cli import main
from l2bt.config import L2BTConfig, TeacherConfig
from l2bt.data.image_io import read_image
from l2bt.decisions.regions import find_regions
from l2bt.decisions.thresholds import Thresholds
from l2bt.engines import load_engine
from l2bt.export.cache import CACHE_NAME, source_digest
from l2bt.export.exporter import TEACHER_INPUT, teacher_input_name, with_teacher_input
from l2bt.export.runtime import OnnxRuntimePredictor
from l2bt.model import L2BT
from l2bt.preprocess import IMAGENET_STD, preprocess
from l2bt.students import Student

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TILES = SHARED_DATA / "magnetic_tile"
# (H, W): tall 289 × 103, wide 247 × 592, and 356 × 265 (odd padding on one side)
IMAGE_FILES = (
    "test/good/exp4_num_52715.jpg",
    "test/break/exp1_num_116934.jpg",
    "test/blowhole/exp1_num_265077.jpg",
)


def relative(got: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(got - reference).max() / np.abs(reference).max())


@pytest.fixture(autouse=True, scope="module")
def memoised_random_teacher():
    """Initialising a random ViT-S takes seconds and every model here has the same one:
    `L2BT.load` gets copies of one."""
    original, built = l2bt.model.load_teacher, {}

    def load_teacher(variant, weights=None):
        if str(weights) != "random":
            return original(variant, weights)
        if variant not in built:
            built[variant] = original(variant, weights)
        return copy.deepcopy(built[variant])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(l2bt.model, "load_teacher", load_teacher)
        yield


def random_model(size: int, input_mode: str = "pad", layers=(1, 3)) -> L2BT:
    config = L2BTConfig(
        teacher=TeacherConfig(
            variant="dinov2_vits14",
            weights="random",
            image_size=size,
            layers=layers,
            input_mode=input_mode,
        )
    )
    teacher = l2bt.model.load_teacher("dinov2_vits14", weights="random")
    torch.manual_seed(size)
    students = Student(teacher.embed_dim), Student(teacher.embed_dim)
    return L2BT.from_parts(config, teacher, *students, device="cpu")


@dataclass
class Exported:
    """A run, its torch model, its ONNX Runtime engine, and what the tests derive from them
    (computed once)."""

    run: Path
    model: L2BT
    engine: OnnxRuntimePredictor
    images: list[np.ndarray]

    @cached_property
    def proto(self):
        return onnx.load(str(self.engine.path))

    def session(self, proto):
        return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])

    @cached_property
    def core(self):
        """The graph fed the teacher input (`with_teacher_input`)."""
        return self.session(with_teacher_input(self.proto))

    @cached_property
    def resize(self):
        """The graph's preprocessing alone: uint8 image -> teacher input."""
        cut = teacher_input_name(self.proto)
        return self.session(onnx.utils.Extractor(self.proto).extract_model(["image"], [cut]))

    @cached_property
    def references(self):
        return self.model.predict_batch(self.images)

    @cached_property
    def predictions(self):
        return self.engine.predict_batch(self.images)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    if not TILES.is_dir():
        pytest.skip(f"../shared/data/{TILES.name} is absent")
    return [read_image(TILES / name) for name in IMAGE_FILES]


@pytest.fixture(scope="module")
def run_224(tmp_path_factory, images):
    """A 224 px run with thresholds inside its maps' range (so masks and verdicts have both
    values), exported on the fly by the engine."""
    model = random_model(224)
    predictions = model.predict_batch(images)
    values = np.concatenate([p.anomaly_map.ravel() for p in predictions])
    scores = [p.score for p in predictions]
    model.thresholds = Thresholds(
        image=float(np.median(scores)),
        pixel=float(np.quantile(values, 0.9)),
        false_alarm_rate=0.1,
        guaranteed_rate=0.1,
        n_calibration=9,
        calibration_images=("a.png",),
    )
    run = model.save(tmp_path_factory.mktemp("export") / "run224")
    engine = load_engine(run, "onnxruntime", device="cpu")
    assert (run / CACHE_NAME).is_file()
    return Exported(run, model, engine, images)


@pytest.fixture(scope="module")
def run_448(tmp_path_factory, images):
    """A 448 px run without thresholds, exported by `l2bt export`."""
    model = random_model(448)
    run = model.save(tmp_path_factory.mktemp("export") / "run448")
    exported = run.parent / "l2bt.onnx"
    assert main(["export", "--model", str(run), "--out", str(exported)]) == 0
    return Exported(run, model, OnnxRuntimePredictor(exported, device="cpu"), images)


@pytest.fixture(params=["run_224", "run_448"])
def exported(request):
    return request.getfixturevalue(request.param)


@pytest.mark.needs_data("magnetic_tile")
def test_graph_equals_torch_on_the_same_teacher_input(exported):
    """The graph past its preprocessing, fed the torch engine's own input tensor."""
    size = exported.model.config.teacher.image_size
    for image, reference in zip(exported.images, exported.references, strict=True):
        x, _ = preprocess(image, size)  # (3, S, S)
        anomaly_map, score = exported.core.run(
            ["anomaly_map", "score"], {"image": image, TEACHER_INPUT: x[None].numpy()}
        )
        assert anomaly_map.shape == image.shape[:2] and anomaly_map.dtype == np.float32
        assert relative(anomaly_map, reference.anomaly_map) <= 1e-5  # measured ≤ 1e-6
        assert abs(float(score) - reference.score) <= 1e-5 * reference.score


@pytest.mark.needs_data("magnetic_tile")
def test_in_graph_preprocessing_is_close_to_pil(exported):
    """uint8 in: the graph's pad and resize against the PIL pipeline, input and map."""
    size = exported.model.config.teacher.image_size
    grey_level = np.array(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1) * 255
    for image, reference, got in zip(
        exported.images, exported.references, exported.predictions, strict=True
    ):
        x, _ = preprocess(image, size)
        (graph_x,) = exported.resize.run(None, {"image": image})
        levels = np.abs(graph_x - x[None].numpy()) * grey_level  # in grey levels
        assert levels.max() <= 2.01 and (levels > 0.5).mean() <= 1e-3  # measured ≤ 6e-5
        assert got.anomaly_map.shape == image.shape[:2]
        assert relative(got.anomaly_map, reference.anomaly_map) <= 1e-3  # measured ≤ 1.2e-4
        assert abs(got.score - reference.score) <= 1e-3 * reference.score


@pytest.mark.needs_data("magnetic_tile")
def test_maps_have_each_images_size_at_extreme_shapes(run_224):
    engine = run_224.engine
    for height, width in ((3, 500), (500, 7), (1, 1), (64, 64)):
        image = textured_image(height, width, seed=height)
        prediction = engine.predict(image)
        assert prediction.anomaly_map.shape == (height, width)
        assert prediction.mask is not None and prediction.mask.shape == (height, width)
        assert np.isfinite(prediction.anomaly_map).all() and np.isfinite(prediction.score)


@pytest.mark.needs_data("magnetic_tile")
def test_decisions_follow_the_graphs_outputs_and_agree_with_torch(run_224):
    thresholds = run_224.model.thresholds
    session = run_224.engine.session
    masked = defective = 0
    for image, reference, got in zip(
        run_224.images, run_224.references, run_224.predictions, strict=True
    ):
        anomaly_map, score, mask, is_defective = session.run(None, {"image": image})
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        assert np.array_equal(mask == 255, anomaly_map > thresholds.pixel)
        assert bool(is_defective) == (float(score) > thresholds.image)
        assert np.array_equal(got.mask, mask == 255)
        assert got.regions == find_regions(got.anomaly_map, got.mask)
        tolerance = np.abs(got.anomaly_map - reference.anomaly_map).max()
        near = np.abs(reference.anomaly_map - thresholds.pixel) <= tolerance
        assert np.array_equal(got.mask[~near], reference.mask[~near])
        if abs(reference.score - thresholds.image) > abs(got.score - reference.score):
            assert got.verdict == reference.verdict
        masked += int(got.mask.sum())
        defective += got.verdict == "defective"
    assert masked > 0 and 0 < defective < len(run_224.images)


@pytest.mark.needs_data("magnetic_tile")
def test_segmentation_threshold_and_cleanup_match_torch(run_224, tmp_path):
    """A run whose masks use a segmentation threshold and every clean-up step: the graph's
    own mask is its map above that threshold, the engine cleans it as `decide` does, and
    the cleaned masks agree with torch's but for pixels the resize's error can flip."""
    from l2bt.decisions.cleanup import Cleanup
    from l2bt.export.exporter import export_onnx

    model = copy.copy(run_224.model)
    values = np.concatenate([p.anomaly_map.ravel() for p in run_224.references])
    cleanup = Cleanup(min_region_area=5, close_radius=1, fill_holes=True)
    model.thresholds = Thresholds(
        **{
            **run_224.model.thresholds.__dict__,
            "cleanup": cleanup,
            "segmentation": float(np.quantile(values, 0.8)),
            "pixel_false_alarm_rate": 0.2,
            "attainable_pixel_rate": 0.2,
        }
    )
    path = tmp_path / "segmentation.onnx"
    export_onnx(model, path)
    engine = OnnxRuntimePredictor(path, device="cpu")
    assert engine.record.thresholds == model.thresholds
    flipped = 0
    for image in run_224.images:
        anomaly_map, _, raw, _ = engine.session.run(None, {"image": image})
        assert np.array_equal(raw == 255, anomaly_map > model.thresholds.segmentation)
        got, reference = engine.predict(image), model.predict(image)
        assert np.array_equal(got.mask, cleanup.apply(raw == 255))
        assert got.regions == find_regions(got.anomaly_map, got.mask)
        assert got.mask.any() and not got.mask.all()
        flipped += int((got.mask != reference.mask).sum())
    assert flipped <= 1e-3 * sum(image.shape[0] * image.shape[1] for image in run_224.images)


@pytest.mark.needs_data("magnetic_tile")
def test_metadata_holds_the_run_config_and_the_graph(run_224):
    run, engine, proto = run_224.run, run_224.engine, run_224.proto
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 18
    metadata = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(metadata["l2bt_config"]) == json.loads((run / "config.json").read_text())
    assert metadata["l2bt_version"]
    graph = json.loads(metadata["l2bt_graph"])
    assert graph["input_mode"] == "pad" and graph["input_hw"] == [224, 224]
    (image,) = proto.graph.input
    assert image.name == "image" and image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = image.type.tensor_type.shape.dim
    assert [d.dim_param != "" for d in dims] == [True, True, False] and dims[2].dim_value == 3
    types = {o.name: o.type.tensor_type.elem_type for o in proto.graph.output}
    assert types == {
        "anomaly_map": onnx.TensorProto.FLOAT,
        "score": onnx.TensorProto.FLOAT,
        "mask": onnx.TensorProto.UINT8,
        "defective": onnx.TensorProto.BOOL,
    }
    described = engine.describe()
    assert described["engine"]["name"] == "onnxruntime"
    assert described["thresholds"] == json.loads((run / "config.json").read_text())["thresholds"]


@pytest.mark.needs_data("magnetic_tile")
def test_a_graph_without_thresholds_gives_maps_and_scores_only(run_448):
    assert [o.name for o in run_448.proto.graph.output] == ["anomaly_map", "score"]
    assert run_448.engine.record.thresholds is None
    prediction = run_448.engine.predict(textured_image(40, 90, seed=1))
    assert prediction.anomaly_map.shape == (40, 90)
    assert prediction.mask is None and prediction.verdict is None and prediction.regions == []


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.needs_data("magnetic_tile")
def test_predict_with_onnxruntime_writes_what_torch_writes(run_224, tmp_path, capsys):
    run, model = run_224.run, run_224.model
    cached = (run / CACHE_NAME).stat().st_mtime_ns
    inputs = [str(TILES / name) for name in IMAGE_FILES]
    for engine in ("torch", "onnxruntime"):
        assert (
            main(
                [
                    "predict",
                    "--model",
                    str(run),
                    "--engine",
                    engine,
                    "--out",
                    str(tmp_path / engine),
                    *inputs,
                ]
            )
            == 0
        )
    assert (run / CACHE_NAME).stat().st_mtime_ns == cached  # the cached export is reused
    torch_dir, ort_dir = tmp_path / "torch", tmp_path / "onnxruntime"
    assert sorted(p.name for p in torch_dir.iterdir()) == sorted(p.name for p in ort_dir.iterdir())
    torch_scores, ort_scores = read_csv(torch_dir / "scores.csv"), read_csv(ort_dir / "scores.csv")
    assert [r["key"] for r in torch_scores] == [r["key"] for r in ort_scores]
    pixel, image = model.thresholds.pixel, model.thresholds.image
    for by_torch, by_ort in zip(torch_scores, ort_scores, strict=True):
        key = by_torch["key"]
        reference = tifffile.imread(torch_dir / f"{key}.tiff")
        anomaly_map = tifffile.imread(ort_dir / f"{key}.tiff")
        tolerance = np.abs(anomaly_map - reference).max()
        assert tolerance <= 1e-3 * np.abs(reference).max()
        near = np.abs(reference - pixel) <= tolerance
        masks = [np.asarray(Image.open(d / f"{key}_mask.png")) == 255 for d in (torch_dir, ort_dir)]
        assert np.array_equal(masks[0][~near], masks[1][~near])
        score_gap = abs(float(by_torch["score"]) - float(by_ort["score"]))
        if abs(float(by_torch["score"]) - image) > score_gap:
            assert by_torch["verdict"] == by_ort["verdict"]
    assert read_csv(ort_dir / "regions.csv")
    capsys.readouterr()
    assert (
        main(
            [
                "predict",
                "--model",
                str(run / CACHE_NAME),
                "--out",
                str(tmp_path / "file"),
                inputs[0],
            ]
        )
        == 0
    )  # an exported file: onnxruntime by default
    assert "images defective" in capsys.readouterr().out


def test_bad_model_files_are_one_line(tmp_path, capsys):
    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_text("not a model")
    foreign = tmp_path / "foreign.onnx"
    identity = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["image"], ["out"])],
        "foreign",
        [onnx.helper.make_tensor_value_info("image", onnx.TensorProto.UINT8, [None, None, 3])],
        [onnx.helper.make_tensor_value_info("out", onnx.TensorProto.UINT8, [None, None, 3])],
    )
    onnx.save_model(onnx.helper.make_model(identity), str(foreign))
    image = tmp_path / "part.png"
    Image.fromarray(textured_image(20, 30, 0)).save(image)
    cases = [
        (not_onnx, [], "not an ONNX file"),
        (foreign, [], "without l2bt metadata"),
        (foreign, ["--engine", "torch"], "runs with --engine onnxruntime"),
    ]
    for model, extra, problem in cases:
        assert (
            main(
                [
                    "predict",
                    "--model",
                    str(model),
                    *extra,
                    "--out",
                    str(tmp_path / "out"),
                    str(image),
                ]
            )
            == 2
        )
        line = one_error_line(capsys)
        assert str(model) in line and problem in line
    assert not (tmp_path / "out").exists()


def test_missing_onnxruntime_and_bad_export_options_are_one_line(tmp_path, capsys, monkeypatch):
    pad_run = random_model(56).save(tmp_path / "pad")
    aspect_run = random_model(56, input_mode="aspect").save(tmp_path / "aspect")
    image = tmp_path / "part.png"
    Image.fromarray(textured_image(20, 30, 0)).save(image)
    cases = [
        (
            ["export", "--model", str(pad_run), "--out", str(tmp_path / "a.onnx"), "--opset", "17"],
            "--opset must be at least 18",
        ),
        (
            ["export", "--model", str(aspect_run), "--out", str(tmp_path / "a.onnx")],
            "give --image-hw H,W",
        ),
        (
            [
                "predict",
                "--model",
                str(aspect_run),
                "--engine",
                "onnxruntime",
                "--out",
                str(tmp_path / "out"),
                str(image),
            ],
            "exported for one image size",
        ),
    ]
    for argv, problem in cases:
        assert main(argv) == 2
        assert problem in one_error_line(capsys)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime fails
    assert (
        main(
            [
                "predict",
                "--model",
                str(pad_run),
                "--engine",
                "onnxruntime",
                "--out",
                str(tmp_path / "out"),
                str(image),
            ]
        )
        == 2
    )
    line = one_error_line(capsys)
    assert "needs onnxruntime" in line and str(pad_run) in line
    assert not (tmp_path / "a.onnx").exists() and not (tmp_path / "out").exists()
    assert not (pad_run / CACHE_NAME).exists()


def test_the_cache_key_follows_the_run_folders_files(tmp_path):
    run = random_model(56).save(tmp_path / "run")
    before = source_digest(run)
    assert source_digest(run) == before
    described = json.loads((run / "config.json").read_text())
    described["thresholds"] = {"image": 1.0}  # a recalibrated run exports again
    (run / "config.json").write_text(json.dumps(described))
    assert source_digest(run) != before


def test_an_export_removes_what_a_killed_export_left(tmp_path):
    """A temporary of an export killed mid-write (its writer gone) is removed by the next
    export beside it; a live writer's is kept."""
    import socket
    import subprocess

    from l2bt.utils.atomic import TMP_MARK

    run = random_model(56).save(tmp_path / "run")
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    left = tmp_path / f".model{TMP_MARK}-{dead.pid}@{host}~.onnx"
    live = tmp_path / f".other{TMP_MARK}-{os.getpid()}@{host}~.onnx"
    for path in (left, live):
        path.write_bytes(b"half an ONNX file")
    assert main(["export", "--model", str(run), "--out", str(tmp_path / "model.onnx")]) == 0
    assert (tmp_path / "model.onnx").is_file()
    assert not left.exists() and live.exists()


def test_aspect_mode_graph_for_one_image_size(tmp_path, capsys):
    model = random_model(112, input_mode="aspect", layers=(0, 1))
    run = model.save(tmp_path / "run")
    exported = tmp_path / "aspect.onnx"
    assert (
        main(["export", "--model", str(run), "--out", str(exported), "--image-hw", "60,160"]) == 0
    )
    assert "aspect mode, 42 x 112 teacher input" in capsys.readouterr().out
    engine = OnnxRuntimePredictor(exported, device="cpu")
    for height, width in ((60, 160), (57, 150)):  # both: a 3 × 8 patch grid
        image = textured_image(height, width, seed=width)
        got, reference = engine.predict(image), model.predict(image)
        assert got.anomaly_map.shape == (height, width)
        assert relative(got.anomaly_map, reference.anomaly_map) <= 1e-3
    with pytest.raises(Exception, match="exported for 42 x 112"):
        engine.predict(textured_image(100, 100, seed=0))


def test_the_library_imports_without_onnx():
    code = (
        "import sys\n"
        "for name in ('onnx', 'onnxruntime', 'onnxscript'): sys.modules[name] = None\n"
        "import l2bt.engines, l2bt.export.runtime, l2bt.export.exporter, l2bt.model\n"
        "from l2bt.cli import build_parser\n"
        "build_parser()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.needs_data("magnetic_tile")
def test_serve_runs_an_exported_file_with_onnxruntime(run_224):
    """`l2bt serve --model FILE.onnx`: the service answers from the ONNX Runtime engine."""
    import argparse
    import base64
    import io

    pytest.importorskip("fastapi")
    from l2bt.cli.serve import _load
    from serving import live_server, post_image

    args = argparse.Namespace(device="cpu", precision=None, weights=None)
    engine = _load(args, run_224.run / CACHE_NAME)
    described = "model"
    assert isinstance(engine, OnnxRuntimePredictor)
    image = run_224.images[1]
    expected = engine.predict_batch([image])[0]
    with live_server(engine, described) as (client, _):
        response = post_image(client, encode(image), mask="png")
        assert response.status_code == 200, response.text
        answer = response.json()
    assert answer["score"] == pytest.approx(expected.score, rel=1e-6)
    assert answer["verdict"] == expected.verdict
    assert answer["threshold"] == run_224.model.thresholds.image
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["mask"]))))
    assert np.array_equal(mask == 255, expected.mask)
