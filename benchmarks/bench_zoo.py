"""anomalib's zoo against l2bt at native resolution, in one `run_benchmark` run.

On a data root (`--data ROOT --category CAT`, e.g. ../shared/data magnetic_tile) or on a
synthetic 2048 × 1536 set with defects from 2 px up (`--synthetic`, made with
`l2bt make-synthetic`'s generator), benchmarks l2bt, l2bt+tiles and each `--zoo` model at
its own size and with +tiles, and prints per method AUPRO@30 % and @5 % by quartile and
absolute size bin at native resolution, the same maps under the low-resolution protocol
(a zoo model's input size; l2bt's at `--low-res`), fit seconds, predict seconds per image
and peak RSS. `--max-train/--max-test` take the first images only (symlinks), to size a
run. Random weights (`--weights random`) support only pipeline facts: which maps exist,
their cost and how a protocol changes one method's figures, never which method is better.

    .venv/bin/python benchmarks/bench_zoo.py --data ../shared/data --category magnetic_tile
    .venv/bin/python benchmarks/bench_zoo.py --synthetic --out runs/bench_zoo_synthetic
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from l2bt.benchmark.jobs import BenchmarkConfig, results_path
from l2bt.benchmark.runner import run_benchmark
from l2bt.config import TeacherConfig, TileSettings
from l2bt.data.synthetic import SyntheticConfig, write_synthetic
from l2bt.methods import MethodSettings

ZOO = "padim,patchcore,efficient_ad,reverse_distillation,fastflow,stfpm"
LIMITS = ("0.3", "0.05")
QUARTILES = ("q1", "q2", "q3", "all")
ABSOLUTE = ("<=64", "<=256", "<=1024", "<=4096", "all")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="data root (MVTec AD layout)")
    parser.add_argument("--category", default="magnetic_tile")
    parser.add_argument("--synthetic", action="store_true", help="a 2048 × 1536 synthetic set")
    parser.add_argument("--out", default="runs/bench_zoo")
    parser.add_argument("--zoo", default=ZOO, help=f"anomalib models (default {ZOO})")
    parser.add_argument("--no-tiles", action="store_true", help="own sizes only")
    parser.add_argument("--l2bt", default="l2bt,l2bt+tiles", help="l2bt methods ('' for none)")
    parser.add_argument("--weights", default="random", help="random, or pretrained files")
    parser.add_argument("--teacher", default="dinov2_vits14")
    parser.add_argument("--image-size", type=int, default=448, help="l2bt's input")
    parser.add_argument("--tile-size", type=int, default=518)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--imagenet-dir", default=None, help="for efficient_ad")
    parser.add_argument("--low-res", type=int, default=256, help="l2bt's low-res protocol")
    parser.add_argument("--max-train", type=int, default=None)
    parser.add_argument("--max-test", type=int, default=None, help="per defect type")
    return parser.parse_args()


def data_root(args: argparse.Namespace, out: Path) -> tuple[Path, str]:
    """The data root and category: the synthetic set, the given one, or a subset of it."""
    if args.synthetic:
        config = SyntheticConfig(n_train=args.max_train or 20, n_test_defective=args.max_test or 16)
        if not (out / "data" / config.category).is_dir():
            write_synthetic(out / "data", config)
        return out / "data", config.category
    root, category = Path(args.data).resolve(), args.category
    if args.max_train is None and args.max_test is None:
        return root, category
    subset = out / "subset" / category
    folders = [p for p in (root / category).glob("*/*") if p.is_dir()]
    for folder in sorted(folders, key=lambda p: (p.parent.name == "ground_truth", str(p))):
        limit = args.max_train if folder.parent.name == "train" else args.max_test
        files = sorted(folder.iterdir())[: limit or None]
        if folder.parent.name == "ground_truth":  # the masks of the test images kept
            kept = {p.stem for p in (subset / "test" / folder.name).iterdir()}
            files = [p for p in folder.iterdir() if p.stem.removesuffix("_mask") in kept]
        (subset / folder.relative_to(root / category)).mkdir(parents=True, exist_ok=True)
        for path in files:
            link = subset / path.relative_to(root / category)
            if not link.exists():
                link.symlink_to(path)
    return out / "subset", category


def methods(args: argparse.Namespace) -> tuple[str, ...]:
    names = [m for m in args.l2bt.split(",") if m]
    for model in (m for m in args.zoo.split(",") if m):
        names += [f"anomalib:{model}"] + ([] if args.no_tiles else [f"anomalib:{model}+tiles"])
    return tuple(names)


def print_result(result: dict) -> None:
    """One method's figures: native quartile and absolute bins, the low-res protocol's."""
    run, low = result["run"], result.get("low_res_protocol") or {}
    print(
        f"\n## {result['method']}: fit {run['train_seconds']:.1f} s, predict "
        f"{run['inference_seconds_per_image_median']:.3f} s/img, peak {run['peak_rss_mib']:.0f} MiB"
    )
    for limit in LIMITS:
        native = [result["aupro"][limit][b] for b in QUARTILES]
        absolute = [result["aupro_abs"][limit][b] for b in ABSOLUTE]
        at_low = [low["aupro"][limit][b] for b in QUARTILES] if low else []
        print(f"AUPRO@{float(limit):.0%} native q1..all  {cells(native)}")
        print(f"AUPRO@{float(limit):.0%} native <=64..all {cells(absolute)}")
        if low:
            print(f"AUPRO@{float(limit):.0%} at {low['size']}² q1..all {cells(at_low)}")


def cells(values: list) -> str:
    return " ".join("  —  " if v is None else f"{v:.3f}" for v in values)


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root, category = data_root(args, out)
    teacher = TeacherConfig(
        variant=args.teacher,
        weights=args.weights,
        image_size=args.image_size,
        tiles=TileSettings(size=args.tile_size),
    )
    settings = MethodSettings(
        teacher=teacher,
        epochs=args.epochs,
        max_steps=args.max_steps,
        imagenet_dir=args.imagenet_dir,
    )
    config = BenchmarkConfig(
        str(root), "mvtec_ad", (category,), methods(args), settings, low_res_protocol=args.low_res
    )
    run = run_benchmark(config, out / "bench")
    for name in run.names:
        path = results_path(out / "bench", name, category)
        if path.is_file():
            print_result(json.loads(path.read_text()))
    for failure in run.failures:
        print(failure.line())
    print(f"\nthe full report: {out / 'bench' / 'results.md'}")


if __name__ == "__main__":
    main()
