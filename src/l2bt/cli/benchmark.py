"""`l2bt benchmark`: every category × method, fit → calibrate → predict → evaluate, with a
report; resumable; on a Ray cluster with `--ray`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from l2bt.cli.common import (
    DATASETS,
    TRAIN,
    add_calibration_args,
    add_device_args,
    add_force_arg,
    add_patch_batch_arg,
    add_teacher_args,
    announce_plan,
    calibration_settings,
    teacher_config,
)

if TYPE_CHECKING:
    from l2bt.methods import MethodSettings

METHOD_NAMES = (
    "l2bt",
    "l2bt@N",
    "patchcore",
    "dinomaly",
    "anomalib:NAME[@N][+tiles]",
    "external:NAME=DIR",
)  # l2bt.methods.METHOD_NAMES
LOCAL_RAY = "local"  # `--ray` without an address: start a local Ray instance


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "benchmark",
        help="compare methods on every category, resumably, with plots",
        description="Re-running with the same --out continues where a run stopped, with or "
        "without --ray.",
    )
    parser.add_argument("--data", required=True, help="data root folder")
    parser.add_argument("--dataset", default="mvtec_ad", help=f"{', '.join(DATASETS)}")
    parser.add_argument("--categories", default=None, help="A,B (default: all found)")
    parser.add_argument(
        "--methods",
        default="l2bt",
        help=f"comma-separated: {', '.join(METHOD_NAMES)} (default l2bt); a suffix "
        "+pad, +aspect or +tiles sets one method's input mode against --input-mode, e.g. "
        "l2bt,l2bt+tiles,patchcore+tiles compares pad and tiles in one run (results filed "
        "under the whole name)",
    )
    parser.add_argument("--out", required=True, help="benchmark folder")
    add_teacher_args(parser)
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"training epochs of every method (default: each its own; l2bt {TRAIN.epochs}, "
        "an anomalib model its authors' schedule)",
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="optimiser steps of every anomalib model (default: its authors' schedule)",
    )
    parser.add_argument(
        "--imagenet-dir",
        default=None,
        help="ImageNette (class folders of images) for anomalib:efficient_ad "
        "(default: anomalib's ./datasets/imagenette)",
    )
    parser.add_argument("--batch-size", type=int, default=4, help="images per predict batch")
    add_patch_batch_arg(parser)
    parser.add_argument(
        "--dinomaly-iterations",
        type=int,
        default=10_000,
        help="Dinomaly's training steps (default 10000, the official recipe)",
    )
    parser.add_argument(
        "--dinomaly-batch-size",
        type=int,
        default=16,
        help="Dinomaly's images per training step (default 16)",
    )
    add_calibration_args(parser)
    parser.add_argument(
        "--low-res-protocol",
        type=int,
        default=None,
        metavar="N",
        help="also score every method's maps as low-resolution benchmarks "
        "do (maps and masks resized to N x N), side by side in results.md",
    )
    add_device_args(parser)
    parser.add_argument("--cache-dir", default=None, help="feature cache folder")
    parser.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL_RAY,
        default=None,
        metavar="ADDRESS",
        help="run each (method, category) as a Ray task on the cluster at "
        "ADDRESS (without one: a local Ray instance); --out and --cache-dir "
        "must be on storage every node sees",
    )
    add_force_arg(parser)
    parser.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> MethodSettings:
    from l2bt.methods import MethodSettings

    return MethodSettings(
        teacher=teacher_config(args),
        epochs=args.epochs,
        patch_batch=args.patch_batch,
        max_steps=args.max_steps,
        imagenet_dir=args.imagenet_dir,
        device=args.device,
        precision=args.precision,
        cache_dir=args.cache_dir,
        batch_size=args.batch_size,
        dinomaly_iterations=args.dinomaly_iterations,
        dinomaly_batch_size=args.dinomaly_batch_size,
    )


def announce(args: argparse.Namespace, settings: MethodSettings) -> list[str]:
    """The categories found (none when --categories names them), every named or found
    one's layout checked, and the plan of the run's teacher over their images printed."""
    from l2bt.data import list_categories, load_category

    found = [] if args.categories else list_categories(args.data, args.dataset)
    names = [c.strip() for c in (args.categories or "").split(",") if c.strip()] or found
    splits = [load_category(args.data, name, args.dataset) for name in names]
    if splits:
        cached = [s.image for split in splits for s in (*split.train, *split.validation)]
        tested = [s.image for split in splits for s in split.test]
        announce_plan(settings.teacher, cached, tested, args.force)
    return found


def check_zoo_names(methods: str) -> None:
    """anomalib model names checked among the arguments, before the data (no torch)."""
    from l2bt.methods.registry import parse_zoo_name

    for spec in (m.strip() for m in methods.split(",")):
        if spec.startswith("anomalib:"):
            parse_zoo_name(spec)


def run(args: argparse.Namespace) -> int:
    decisions = calibration_settings(args)
    if args.ray is not None and args.cache_dir is None:
        args.cache_dir = str(Path(args.out) / "cache")  # on the storage every node sees
    settings = settings_from(args)
    check_zoo_names(args.methods)
    found = announce(args, settings)
    from l2bt.benchmark.jobs import BenchmarkConfig  # torch: once every argument is checked
    from l2bt.benchmark.runner import parse_categories, run_benchmark

    categories = parse_categories(args.categories, found)
    config = BenchmarkConfig(
        data=str(Path(args.data).resolve()),
        dataset=args.dataset,
        categories=categories,
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        settings=settings,
        calibration=args.calibration,
        decisions=decisions,
        low_res_protocol=args.low_res_protocol,
    )
    executor = None
    if args.ray is not None:
        from l2bt.benchmark.ray import ray_executor

        executor = ray_executor(None if args.ray == LOCAL_RAY else args.ray)
    benchmark = run_benchmark(config, Path(args.out), executor=executor)
    print((Path(args.out) / "results.md").read_text())
    if benchmark.failures:
        print(
            f"l2bt benchmark: {len(benchmark.failures)} of {len(benchmark.jobs)} jobs "
            f"failed (a re-run redoes only those):",
            file=sys.stderr,
        )
        for failure in benchmark.failures:
            print(f"  {failure.line()}", file=sys.stderr)
        return 1
    return 0
