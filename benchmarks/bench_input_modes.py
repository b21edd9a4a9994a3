"""The aspect input mode against the paper's padding to a square (SPEC §9).

Prints, in one run on one machine:
1. for long, thin parts (1130 × 460, 1540 × 645, 4224 × 1056 px by default), the
   teacher's tokens and its median time per image in `pad` and `aspect` mode, and the
   ratios (both modes interleaved, so load on the machine hits both alike);
2. AUPRO (q1 and all, every FPR limit) on a data set's category with the same teacher in
   both modes: fit, predict and evaluate through the library, as `l2bt` does.

Random weights by default: times do not depend on the weights' values; accuracy with a
random teacher only compares the two modes' pipelines (pass --weights for real figures).

    .venv/bin/python benchmarks/bench_input_modes.py                     # ViT-B/14-reg, 1036 px
    .venv/bin/python benchmarks/bench_input_modes.py --quick             # a smoke run
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import interleaved_medians
from l2bt.config import L2BTConfig, TeacherConfig, TrainConfig
from l2bt.data import load_category
from l2bt.maps.evaluate import evaluate_maps
from l2bt.maps.inputs import PredictItem
from l2bt.maps.predict import PredictOptions, predict_to_folder
from l2bt.model import L2BT
from l2bt.preprocess import InputGeometry, preprocess
from l2bt.teacher import load_teacher

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def tokens(geometry: InputGeometry, registers: int) -> int:
    rows, cols = geometry.grid
    return rows * cols + 1 + registers


def teacher_times(args: argparse.Namespace) -> list[dict]:
    teacher = load_teacher(args.teacher, weights=args.weights)
    layers = (7, 11)
    rows = []
    rng = np.random.default_rng(0)
    for shape in args.shapes.split(","):
        width, height = (int(v) for v in shape.split("x"))
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        inputs = {mode: preprocess(image, args.image_size, mode) for mode in ("pad", "aspect")}
        medians = interleaved_medians(
            {
                mode: (lambda x=x: teacher.features(x[None], layers, args.precision))
                for mode, (x, _) in inputs.items()
            },
            args.repeats,
        )
        row = {"shape": f"{width}x{height}"}
        for mode, (_, geometry) in inputs.items():
            row[f"{mode}_input"] = f"{geometry.input_width}x{geometry.input_height}"
            row[f"{mode}_tokens"] = tokens(geometry, teacher.num_register_tokens)
            row[f"{mode}_seconds"] = medians[mode]
        row["token_ratio"] = row["pad_tokens"] / row["aspect_tokens"]
        row["speedup"] = row["pad_seconds"] / row["aspect_seconds"]
        rows.append(row)
        print(
            f"{row['shape']:>10}: pad {row['pad_input']} {row['pad_tokens']} tokens "
            f"{row['pad_seconds']:.2f} s | aspect {row['aspect_input']} "
            f"{row['aspect_tokens']} tokens {row['aspect_seconds']:.2f} s | tokens "
            f"{row['token_ratio']:.2f}x fewer, {row['speedup']:.2f}x faster",
            flush=True,
        )
    return rows


def accuracy(args: argparse.Namespace) -> dict[str, dict]:
    split = load_category(args.data, args.category)
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("pad", "aspect"):
            config = L2BTConfig(
                TeacherConfig(
                    args.eval_teacher, args.weights, args.eval_image_size, input_mode=mode
                ),
                TrainConfig(epochs=args.epochs),
            )
            tic = time.perf_counter()
            model = L2BT.fit(
                [s.image for s in split.train],
                config,
                device="cpu",
                precision=args.precision,
                cache_dir=Path(tmp) / "cache",
            )
            maps = Path(tmp) / mode
            items = [PredictItem(s.image, s.key) for s in split.test]
            predict_to_folder(model, items, maps / split.name, PredictOptions(overlays=False))
            result = evaluate_maps(split, maps).to_json_dict()
            figures[mode] = {
                "aupro": result["aupro"],
                "i_auroc": result["i_auroc"],
                "seconds": round(time.perf_counter() - tic, 1),
            }
            aupro = result["aupro"]
            print(
                f"{mode:>6}: "
                + "; ".join(
                    f"AUPRO@{float(lim):.0%} q1 {aupro[lim]['q1']:.4f} all {aupro[lim]['all']:.4f}"
                    for lim in aupro
                )
                + f" ({figures[mode]['seconds']} s)",
                flush=True,
            )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="dinov2_vitb14_reg")
    parser.add_argument("--weights", default="random")
    parser.add_argument("--image-size", type=int, default=1036)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--shapes", default="1130x460,1540x645,4224x1056", help="WxH,…")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", default=str(SHARED_DATA))
    parser.add_argument("--category", default="magnetic_tile")
    parser.add_argument("--eval-teacher", default="dinov2_vits14")
    parser.add_argument("--eval-image-size", type=int, default=448)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="ViT-S, 224 px, mini data set")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    if args.quick:
        args.teacher, args.image_size, args.repeats = "dinov2_vits14_reg", 224, 1
        args.category, args.eval_image_size, args.epochs = "magnetic_tile_mini", 112, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; teacher {args.teacher} "
        f"at {args.image_size} px, {args.precision}"
    )
    figures = {"teacher": teacher_times(args), "accuracy": accuracy(args)}
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
