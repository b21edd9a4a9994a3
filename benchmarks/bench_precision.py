"""bf16 against fp32 on this machine, in one run: speed, and what it does to the maps.

Speed (random weights: timing does not depend on their values; variants alternate,
medians of `--repeats`):
1. the teacher at `--image-size` (default ViT-B/14-reg at 1036 px, one image): fp32,
   the previous bf16 (autocast around the fp32 model) and bf16 (`Teacher.features(...,
   "bf16")`: weights cast once, see `l2bt.teacher.vit`), beside plain fp32 and bf16
   matmul rates of the same inner shapes (tokens × D @ D × 4D);
2. the students: predict (`patch_anomaly`) and one training step on 4 images
   (`train_students`), fp32 against bf16.
Fidelity: L2BT fitted twice on `--category` of `--data` (random ViT-S/14 teacher at
`--fidelity-size`, `--epochs` epochs), once per precision, through the library's own
`L2BT.fit`, `l2bt.maps.predict.predict_to_folder` and `l2bt.maps.evaluate.evaluate_maps`:
relative error of the bf16 maps against the fp32 maps, and the change of every metric
(AUPRO at every limit and size bin, P-AUROC, I-AUROC).

    .venv/bin/python benchmarks/bench_precision.py            # the real figures (~15 min here)
    .venv/bin/python benchmarks/bench_precision.py --quick    # a smoke run (~1 min)
    .venv/bin/python benchmarks/bench_precision.py --profile  # + the top ops of one block
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import interleaved_medians, teacher_flops
from l2bt import L2BT
from l2bt.anomaly_map import patch_anomaly
from l2bt.config import L2BTConfig, TeacherConfig, TrainConfig
from l2bt.data import load_category
from l2bt.features import TrainFeatures
from l2bt.maps.evaluate import evaluate_maps
from l2bt.maps.inputs import PredictItem
from l2bt.maps.layout import MapsFolder, read_map
from l2bt.maps.predict import PredictOptions, predict_to_folder
from l2bt.teacher import Teacher, load_teacher
from l2bt.training import new_students, train_students

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def matmul_rates(n: int, dim: int, repeats: int) -> dict[str, float]:
    """GFLOP/s of an (n, D) @ (D, 4D) product in fp32 and in bf16."""
    operands = {
        name: (torch.randn(n, dim).to(dtype), torch.randn(dim, 4 * dim).to(dtype))
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
    }
    seconds = interleaved_medians(
        {name: (lambda a=a, b=b: a @ b) for name, (a, b) in operands.items()}, repeats
    )
    return {name: 2 * n * dim * 4 * dim / s / 1e9 for name, s in seconds.items()}


def autocast_features(teacher: Teacher, x: torch.Tensor, layers: tuple[int, ...]) -> object:
    """The previous bf16 path: autocast around the fp32 model (every weight cast per call)."""
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        return teacher.intermediate_patch_tokens(x, layers)


def bench_teacher(args: argparse.Namespace) -> dict[str, object]:
    teacher = load_teacher(args.teacher, weights="random")
    layers = (7, 11)
    grid = args.image_size // 14
    n_tokens = grid * grid + 1 + teacher.num_register_tokens
    x = torch.randn(1, 3, args.image_size, args.image_size)
    seconds = interleaved_medians(
        {
            "fp32": lambda: teacher.features(x, layers),
            "autocast": lambda: autocast_features(teacher, x, layers),
            "bf16": lambda: teacher.features(x, layers, "bf16"),
        },
        args.repeats,
    )
    flops = teacher_flops(n_tokens, teacher.embed_dim, max(layers) + 1)
    rates = matmul_rates(n_tokens, teacher.embed_dim, args.repeats)
    print(
        f"\n[teacher] {args.teacher}, {args.image_size} px, {flops / 1e9:.0f} GFLOP per image,"
        f" medians of {args.repeats}"
    )
    for name, label in (
        ("fp32", "fp32"),
        ("autocast", "bf16 autocast (before)"),
        ("bf16", "bf16 (weights cast once)"),
    ):
        rate = flops / seconds[name] / 1e9
        print(
            f"  {label:26s} {seconds[name]:8.2f} s/img  {rate:7.1f} GFLOP/s"
            f"   fp32 / this {seconds['fp32'] / seconds[name]:5.2f}x"
        )
    print(
        f"  plain matmul ({n_tokens}x{teacher.embed_dim} @ {teacher.embed_dim}x"
        f"{4 * teacher.embed_dim}): fp32 {rates['fp32']:.1f}, bf16 {rates['bf16']:.1f} GFLOP/s"
        f" ({rates['bf16'] / rates['fp32']:.2f}x)"
    )
    if args.profile:
        profile_block(teacher, n_tokens)
    return {
        "seconds": seconds,
        "gflop": flops / 1e9,
        "matmul_gflops": rates,
        "speedup": seconds["fp32"] / seconds["bf16"],
    }


def profile_block(teacher: Teacher, n_tokens: int) -> None:
    """The most expensive operators of one block: fp32, autocast and bf16 (one call each)."""
    from torch.profiler import profile

    tokens = torch.randn(1, n_tokens, teacher.embed_dim)
    runs = {
        "fp32": lambda: teacher.blocks[0](tokens),
        "autocast": lambda: autocast_block(teacher, tokens),
        "bf16": lambda: teacher.blocks_in(torch.bfloat16)[0](tokens),
    }
    with torch.inference_mode():
        for name, run in runs.items():
            run()
            with profile() as prof:
                run()
            events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
            total = sum(e.self_cpu_time_total for e in events) / 1e3
            top = ", ".join(
                f"{e.key.removeprefix('aten::')} {e.self_cpu_time_total / 1e3:.0f} ({e.count})"
                for e in events[:7]
            )
            print(f"  one block, {name}: {total:.0f} ms; ms (calls): {top}")


def autocast_block(teacher: Teacher, tokens: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return teacher.blocks[0](tokens)


def bench_students(args: argparse.Namespace, dim: int) -> dict[str, object]:
    grid = args.image_size // 14
    rng = np.random.default_rng(0)
    early = rng.normal(size=(8, grid, grid, dim)).astype(np.float16)
    late = (np.tanh(early) + 0.3 * rng.normal(size=early.shape)).astype(np.float16)
    with tempfile.TemporaryDirectory() as tmp:
        features = TrainFeatures(
            early.reshape(-1, dim),
            late.reshape(-1, dim),
            grids=np.full((8, 2), grid),
            folder=Path(tmp),
        )
        # (8, grid, grid, D) -> (8·grid², D) rows, as the feature cache holds them
        config = TrainConfig(epochs=1, batch_size=4)  # 2 steps of 4 images
        train = interleaved_medians(
            {
                precision: (
                    lambda p=precision: train_students(features, config, torch.device("cpu"), p)
                )
                for precision in ("fp32", "bf16")
            },
            args.repeats,
        )
    forward, backward = new_students(dim, seed=0)
    e, t = (torch.from_numpy(a[:1].astype(np.float32)) for a in (early, late))

    def predict(precision: str) -> torch.Tensor:
        with torch.inference_mode():
            return patch_anomaly(forward, backward, e, t, precision)

    infer = interleaved_medians(
        {p: (lambda p=p: predict(p)) for p in ("fp32", "bf16")}, args.repeats
    )
    step = {p: s / 2 for p, s in train.items()}
    print(f"\n[students] D = {dim}, {grid}x{grid} patches per image")
    print(
        f"  predict, 1 image:           fp32 {infer['fp32']:6.3f} s  bf16 {infer['bf16']:6.3f} s"
        f"  {infer['fp32'] / infer['bf16']:.2f}x"
    )
    print(
        f"  training step, 4 images:    fp32 {step['fp32']:6.3f} s  bf16 {step['bf16']:6.3f} s"
        f"  {step['fp32'] / step['bf16']:.2f}x"
    )
    return {
        "predict_seconds": infer,
        "train_step_seconds": step,
        "train_speedup": step["fp32"] / step["bf16"],
    }


def fit_and_predict(split, precision: str, args: argparse.Namespace, work: Path) -> Path:
    """Fit on the split's training images in `precision`, predict its test images into
    `work/<precision>/maps/<category>/...`; returns the maps folder."""
    config = L2BTConfig(
        TeacherConfig("dinov2_vits14", "random", args.fidelity_size),
        TrainConfig(epochs=args.epochs),
    )
    model = L2BT.fit(
        [s.image for s in split.train],
        config,
        device="cpu",
        precision=precision,
        cache_dir=work / "cache",
    )
    maps = work / precision / "maps"
    items = [PredictItem(s.image, s.key) for s in split.evaluable_test]
    predict_to_folder(model, items, maps / split.name, PredictOptions(overlays=False))
    losses = model.record.training.epoch_losses
    print(f"  {precision}: losses per epoch {', '.join(f'{v:.4f}' for v in losses)}")
    return maps


def map_errors(split, fp32_maps: Path, bf16_maps: Path) -> dict[str, float]:
    """Relative L2 error of the bf16 maps over all test images, and the largest per image."""
    squared_error = squared_norm = 0.0
    worst = 0.0
    for s in split.evaluable_test:
        a = read_map(MapsFolder(fp32_maps / split.name).map(s.key)).astype(np.float64)
        b = read_map(MapsFolder(bf16_maps / split.name).map(s.key)).astype(np.float64)
        squared_error += float(np.sum((b - a) ** 2))
        squared_norm += float(np.sum(a**2))
        worst = max(worst, float(np.linalg.norm(b - a) / np.linalg.norm(a)))
    return {"relative_error": (squared_error / squared_norm) ** 0.5, "worst_image": worst}


def metric_changes(fp32: dict, bf16: dict) -> dict[str, float | None]:
    """bf16 − fp32 for every AUPRO (limit × bin), P-AUROC and I-AUROC."""
    changes: dict[str, float | None] = {}
    for limit, bins in fp32["aupro"].items():
        for name, value in bins.items():
            other = bf16["aupro"][limit][name]
            changes[f"aupro@{limit}/{name}"] = (
                None if value is None or other is None else other - value
            )
    for key in ("p_auroc", "i_auroc"):
        changes[key] = None if fp32[key] is None else bf16[key] - fp32[key]
    return changes


def bench_fidelity(args: argparse.Namespace) -> dict[str, object]:
    split = load_category(args.data, args.category)
    print(
        f"\n[fidelity] {args.category}: {len(split.train)} training, "
        f"{len(split.evaluable_test)} test images; random ViT-S/14 at {args.fidelity_size} px,"
        f" {args.epochs} epochs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tic = time.perf_counter()
        maps = {p: fit_and_predict(split, p, args, work) for p in ("fp32", "bf16")}
        results = {p: evaluate_maps(split, maps[p]).to_json_dict() for p in maps}
        errors = map_errors(split, maps["fp32"], maps["bf16"])
        seconds = time.perf_counter() - tic
    changes = metric_changes(results["fp32"], results["bf16"])
    known = [abs(v) for v in changes.values() if v is not None]
    largest = max(known) if known else 0.0
    print(
        f"  map relative error {errors['relative_error']:.2e} (worst image "
        f"{errors['worst_image']:.2e})"
    )
    print(f"  {'AUPRO':<10}" + "".join(f" {name:>16}" for name in ("q1", "q2", "q3", "all")))
    for limit in results["fp32"]["aupro"]:
        cells = []
        for name in ("q1", "q2", "q3", "all"):
            value, change = results["fp32"]["aupro"][limit][name], changes[f"aupro@{limit}/{name}"]
            cells.append("—" if value is None or change is None else f"{value:.4f} {change:+.4f}")
        print(f"  {'@' + limit:<10}" + "".join(f" {c:>16}" for c in cells))
    for key in ("p_auroc", "i_auroc"):
        value, change = results["fp32"][key], changes[key]
        print(f"  {key:<10} {value:.4f} {change:+.4f}" if change is not None else f"  {key}: —")
    print(f"  largest |change| {largest:.4f} (target <= 0.01); {seconds:.0f} s")
    return {
        "map_errors": errors,
        "fp32": results["fp32"],
        "bf16": results["bf16"],
        "changes": changes,
        "largest_change": largest,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="dinov2_vitb14_reg")
    parser.add_argument("--image-size", type=int, default=1036)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--category", default="magnetic_tile")
    parser.add_argument("--fidelity-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--skip-fidelity", action="store_true")
    parser.add_argument("--profile", action="store_true", help="top operators of one block")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="ViT-S at 224 px, 1 repeat, the mini data set, 112 px, 1 epoch",
    )
    args = parser.parse_args()
    if args.quick:
        args.teacher, args.image_size, args.repeats = "dinov2_vits14", 224, 1
        args.category, args.fidelity_size, args.epochs = "magnetic_tile_mini", 112, 1
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    figures: dict[str, object] = {"teacher": bench_teacher(args)}
    figures["students"] = bench_students(args, load_teacher(args.teacher, "random").embed_dim)
    if not args.skip_fidelity:
        figures["fidelity"] = bench_fidelity(args)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
