"""`l2bt demo`: the main job on a small synthetic high-resolution data set, on a CPU.

Makes (once) a synthetic data set with defects from a few pixels to large stains, then
benchmarks L2BT at high resolution against L2BT at 224 px and PatchCore, and writes the
report. The defaults take about 4 minutes on two CPU cores (measured with a random
ViT-S/14-reg teacher; README); pass the paper's settings (`--teacher dinov2_vitb14_reg
--image-size 1036 --epochs 50`) on a GPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from l2bt.cli.common import add_device_args


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="benchmark on a synthetic data set, on a CPU",
        description=__doc__.split("\n\n")[1],
    )
    parser.add_argument("--out", default="runs/demo", help="demo folder (default runs/demo)")
    parser.add_argument(
        "--weights",
        default=None,
        help="teacher checkpoint path or URL, or 'random' for an offline "
        "smoke run (default: the official checkpoint)",
    )
    parser.add_argument("--teacher", default="dinov2_vits14_reg")
    parser.add_argument("--image-size", type=int, default=672)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--methods", default="l2bt,l2bt@224,patchcore")
    parser.add_argument("--size", type=int, default=1536, help="long side of the images")
    parser.add_argument(
        "--n-train",
        type=int,
        default=48,
        help="training images (the default holds out 8 of 48 to calibrate)",
    )
    parser.add_argument("--false-alarm-rate", type=float, default=0.1, metavar="ALPHA")
    parser.add_argument(
        "--low-res-protocol",
        type=int,
        default=224,
        metavar="N",
        help="also score the maps at N x N, as low-resolution benchmarks do (default 224; 0: off)",
    )
    parser.add_argument("--n-test", type=int, default=16, help="defective test images")
    add_device_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from l2bt.benchmark.jobs import BenchmarkConfig
    from l2bt.benchmark.runner import check_teacher, run_benchmark
    from l2bt.config import TeacherConfig
    from l2bt.data.synthetic import SyntheticConfig, write_synthetic
    from l2bt.decisions.calibrate import CalibrationSettings
    from l2bt.methods import MethodSettings

    out = Path(args.out)
    settings = MethodSettings(
        teacher=TeacherConfig(args.teacher, args.weights, args.image_size),
        epochs=args.epochs,
        device=args.device,
        precision=args.precision,
    )
    check_teacher(settings)  # before any output: offline without weights stops here
    data = out / "data"
    synthetic = SyntheticConfig(
        size=args.size,
        n_train=args.n_train,
        n_test_good=max(2, args.n_test // 3),
        n_test_defective=args.n_test,
    )
    if not (data / synthetic.category).is_dir():
        print(f"making a synthetic data set in {data} …")
        write_synthetic(data, synthetic)
    if args.weights == "random":
        print(
            "note: a random teacher gives meaningless scores; this run only shows the "
            "pipeline working"
        )
    config = BenchmarkConfig(
        data=str(data.resolve()),
        dataset="mvtec_ad",
        categories=(synthetic.category,),
        methods=tuple(args.methods.split(",")),
        settings=settings,
        decisions=CalibrationSettings(args.false_alarm_rate),
        low_res_protocol=args.low_res_protocol or None,
    )
    benchmark = run_benchmark(config, out / "benchmark")
    print((out / "benchmark" / "results.md").read_text())
    print(f"report: {out / 'benchmark' / 'results.md'}; plots: {out / 'benchmark' / 'plots'}")
    for failure in benchmark.failures:
        print(failure.line(), file=sys.stderr)
    return 1 if benchmark.failures else 0
