"""`l2bt benchmark`: every category × method, fit → predict → evaluate, with a report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from l2bt.cli.common import DATASETS, add_device_args, add_teacher_args, show_progress

if TYPE_CHECKING:
    from l2bt.methods import MethodSettings

METHOD_NAMES = ("l2bt", "l2bt@N", "patchcore", "dinomaly",
                "external:NAME=DIR")  # l2bt.methods.METHOD_NAMES


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "benchmark", help="compare methods on every category, resumably, with plots",
        description="Re-running with the same --out continues where a run stopped.",
    )
    parser.add_argument("--data", required=True, help="data root folder")
    parser.add_argument("--dataset", default="mvtec_ad", help=f"{', '.join(DATASETS)}")
    parser.add_argument("--categories", default=None, help="A,B (default: all found)")
    parser.add_argument("--methods", default="l2bt",
                        help=f"comma-separated: {', '.join(METHOD_NAMES)} (default l2bt)")
    parser.add_argument("--out", required=True, help="benchmark folder")
    add_teacher_args(parser)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=4, help="images per predict batch")
    add_device_args(parser)
    parser.add_argument("--cache-dir", default=None, help="feature cache folder")
    parser.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> MethodSettings:
    from l2bt.methods import MethodSettings

    return MethodSettings(teacher=args.teacher, weights=args.weights,
                          image_size=args.image_size, epochs=args.epochs, device=args.device,
                          precision=args.precision, cache_dir=args.cache_dir,
                          batch_size=args.batch_size)


def run(args: argparse.Namespace) -> int:
    from l2bt.benchmark.runner import BenchmarkConfig, parse_categories, run_benchmark
    from l2bt.data import list_categories

    categories = parse_categories(
        args.categories, [] if args.categories else list_categories(args.data, args.dataset))
    config = BenchmarkConfig(
        data=str(Path(args.data).resolve()), dataset=args.dataset, categories=categories,
        methods=tuple(m for m in args.methods.split(",") if m.strip()),
        settings=settings_from(args),
    )
    run_benchmark(config, Path(args.out), progress=show_progress())
    print((Path(args.out) / "results.md").read_text())
    return 0
