"""`l2bt calibrate`: recompute a run's thresholds on new defect-free images, without
retraining (after a camera or lighting change, say)."""

from __future__ import annotations

import argparse

from l2bt.cli.common import (
    add_bit_depth_arg,
    add_decision_args,
    add_trained_run_args,
    calibration_settings,
    run_bit_depth,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="set a run's thresholds from new defect-free images",
        description="Predicts every image in --images (defect-free parts the model never "
        "trained on) and rewrites the run's thresholds in config.json at the asked "
        "false-alarm rate (split conformal: guaranteed on average over calibration sets).",
    )
    parser.add_argument("--model", required=True, help="run folder written by `l2bt fit`")
    parser.add_argument("--images", required=True, help="folder of defect-free images")
    add_decision_args(parser)
    parser.add_argument("--batch-size", type=int, default=4)
    add_trained_run_args(parser)
    add_bit_depth_arg(parser, trained=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from l2bt.decisions.calibration_images import calibration_folder_images
    from l2bt.errors import InputError
    from l2bt.run import CONFIG_FILE, read_run

    settings = calibration_settings(args)
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be 1 or more, got {args.batch_size}")
    read_run(Path(args.model))  # a run folder, its config.json checked
    images = calibration_folder_images(Path(args.images))
    from l2bt.model import L2BT  # torch: once every argument is checked

    model = L2BT.load(
        args.model, device=args.device, precision=args.precision, weights=args.weights
    )
    run_bit_depth(args.bit_depth, model.record.bit_depth)
    thresholds = model.calibrate(images, settings, args.batch_size)
    model.save_thresholds(args.model)
    print(thresholds.summary())
    print(f"wrote {Path(args.model) / CONFIG_FILE}")
    return 0
