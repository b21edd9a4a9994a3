"""ONNX Runtime against torch eager: seconds per image and how far apart their maps are.

One model (random teacher and students: timing does not depend on the weights' values),
exported once with `l2bt export`'s exporter, and one image of a realistic size, predicted
by both engines in the same run, interleaved (the order alternates each repeat, so that
neither engine always runs on a warmer cache). Both run the whole road from the uint8
image to the map and score on this machine's CPU, fp32, with their default thread counts.
Prints the median seconds per image of each, their ratio, the export time and file size,
and the map and score differences (relative: max |Δ| / max |map|), which include the
in-graph resize's difference from PIL.

    .venv/bin/python benchmarks/bench_onnx.py            # ViT-B/14-reg at 1036 px, 1000 × 1500
    .venv/bin/python benchmarks/bench_onnx.py --quick    # ViT-S/14 at 224 px, a smoke run
    .venv/bin/python benchmarks/bench_onnx.py --parity   # the tests' images and models
    .venv/bin/python benchmarks/bench_onnx.py --teacher dinov2_vits14 --tiles 518 \
        --image-hw 1536,2048 --repeats 3                 # a tiles graph for one image size

`--parity` measures, on the three magnetic_tile images of tests/test_export.py and with
its models (random ViT-S/14, layers 1 and 3, students seeded by the input size) at 224,
448 and 1036 px, the relative map difference and the score difference between the
engines: the figures README quotes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import interleaved_seconds
from l2bt.config import L2BTConfig, TeacherConfig
from l2bt.export.exporter import export_onnx
from l2bt.export.runtime import OnnxRuntimePredictor
from l2bt.model import L2BT
from l2bt.students import Student
from l2bt.teacher import load_teacher


def textured_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random texture with noise, (H, W, 3) uint8: a stand-in for a part."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 128 + 60 * np.sin(xx / 23.0 + rng.random() * 6) * np.cos(yy / 31.0)
    gray = np.clip(base + rng.normal(0, 8, (height, width)), 0, 255)
    return np.repeat(gray[:, :, None], 3, axis=2).astype(np.uint8)


def random_model(variant: str, size: int, tile_size: int | None = None) -> L2BT:
    """Pad mode at `size`, or tiles mode with `tile_size` windows at native scale."""
    mode = {} if tile_size is None else {"input_mode": "tiles", "tile_size": tile_size}
    teacher_config = TeacherConfig(variant=variant, weights="random", image_size=size, **mode)
    config = L2BTConfig(teacher=teacher_config)
    teacher = load_teacher(variant, weights="random")
    torch.manual_seed(0)
    return L2BT.from_parts(
        config, teacher, Student(teacher.embed_dim), Student(teacher.embed_dim), device="cpu"
    )


PARITY_IMAGES = (  # tests/test_export.py's IMAGE_FILES
    "test/good/exp4_num_52715.jpg",
    "test/break/exp1_num_116934.jpg",
    "test/blowhole/exp1_num_265077.jpg",
)
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "magnetic_tile"


def parity() -> None:
    """Map and score differences on the tests' images, models and sizes."""
    from l2bt.model import as_rgb

    images = [as_rgb(DATA / name) for name in PARITY_IMAGES]
    for size in (224, 448, 1036):
        config = L2BTConfig(teacher=TeacherConfig("dinov2_vits14", "random", size, layers=(1, 3)))
        teacher = load_teacher("dinov2_vits14", weights="random")
        torch.manual_seed(size)
        model = L2BT.from_parts(config, teacher, Student(384), Student(384), device="cpu")
        with tempfile.TemporaryDirectory() as scratch:
            export_onnx(model, Path(scratch) / "model.onnx")
            engine = OnnxRuntimePredictor(Path(scratch) / "model.onnx", device="cpu")
            maps, scores = [], []
            for image in images:
                reference, got = model.predict(image), engine.predict(image)
                peak = np.abs(reference.anomaly_map).max()
                maps.append(np.abs(got.anomaly_map - reference.anomaly_map).max() / peak)
                scores.append(abs(got.score - reference.score) / abs(reference.score))
        print(
            f"{size:>5} px: map max |Δ| / max |map| {max(maps):.2e} (per image "
            f"{', '.join(f'{m:.1e}' for m in maps)}); score {max(scores):.2e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="ViT-S/14, 224 px, 460 × 1130")
    parser.add_argument("--teacher", default=None, help="default dinov2_vitb14_reg")
    parser.add_argument("--image-size", type=int, default=None, help="default 1036")
    parser.add_argument("--image-hw", default=None, help="H,W of the image; default 1000,1500")
    parser.add_argument("--repeats", type=int, default=None, help="default 5 (quick: 3)")
    parser.add_argument("--parity", action="store_true", help="only the tests' parity figures")
    parser.add_argument(
        "--tiles", type=int, default=None, metavar="T", help="tiles mode, T px windows"
    )
    args = parser.parse_args()
    if args.parity:
        parity()
        return
    variant = args.teacher or ("dinov2_vits14" if args.quick else "dinov2_vitb14_reg")
    size = args.image_size or (224 if args.quick else 1036)
    height, width = (
        int(v) for v in (args.image_hw or ("460,1130" if args.quick else "1000,1500")).split(",")
    )
    repeats = args.repeats or (3 if args.quick else 5)

    model = random_model(variant, size, args.tiles)
    image = textured_image(height, width)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "model.onnx"
        tic = time.perf_counter()
        export_onnx(model, path, image_hw=None if args.tiles is None else (height, width))
        export_seconds = time.perf_counter() - tic
        file_mib = path.stat().st_size / 2**20
        engine = OnnxRuntimePredictor(path, device="cpu")
    seconds = interleaved_seconds(
        {"torch": lambda: model.predict(image), "onnxruntime": lambda: engine.predict(image)},
        repeats,
    )
    reference, got = model.predict(image), engine.predict(image)
    map_error = float(
        np.abs(got.anomaly_map - reference.anomaly_map).max() / np.abs(reference.anomaly_map).max()
    )
    score_error = abs(got.score - reference.score) / abs(reference.score)

    torch_s = statistics.median(seconds["torch"])
    ort_s = statistics.median(seconds["onnxruntime"])
    mode = f"{size} px" if args.tiles is None else f"tiles of {args.tiles} px (native scale)"
    print(
        f"{variant} at {mode}, fp32, one {height} × {width} image, {repeats} interleaved "
        f"repeats; torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"onnxruntime {engine.session.get_providers()[0]}"
    )
    print(f"export: {export_seconds:.1f} s, {file_mib:.1f} MiB")
    print("| engine | median s/image | all runs (s) |")
    print("|---|---|---|")
    for name, median in (("torch eager", torch_s), ("onnxruntime", ort_s)):
        runs = seconds["torch" if name == "torch eager" else "onnxruntime"]
        print(f"| {name} | {median:.3f} | {', '.join(f'{s:.3f}' for s in runs)} |")
    print(f"onnxruntime / torch: {ort_s / torch_s:.2f}")
    print(
        f"map difference: {map_error:.2e} relative (max |Δ| / max |map|); "
        f"score: {score_error:.2e} relative"
    )


if __name__ == "__main__":
    main()
