"""`l2bt fit`: train the students on a category's defect-free images, and calibrate
thresholds on defect-free images they never saw (SPEC §7)."""

from __future__ import annotations

import argparse
from pathlib import Path

from l2bt.cli.common import (
    add_bit_depth_arg,
    add_calibration_args,
    add_dataset_args,
    add_device_args,
    add_teacher_args,
    decision_settings,
    show_progress,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("fit", help="train a model on defect-free images")
    add_dataset_args(parser)
    parser.add_argument("--out", required=True, help="run folder to write")
    add_teacher_args(parser)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=4, help="images per training step")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    add_bit_depth_arg(parser)
    add_calibration_args(parser)
    add_device_args(parser)
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="feature cache folder (default $L2BT_CACHE_DIR or ~/.cache/l2bt)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from l2bt.config import L2BTConfig, TeacherConfig, TrainConfig
    from l2bt.data import load_category
    from l2bt.data.image_io import bit_depth
    from l2bt.decisions.calibration_images import parse_calibration, split_calibration
    from l2bt.errors import InputError
    from l2bt.model import L2BT

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise InputError("output folder exists and is not empty (use --overwrite)", out)
    beta, cleanup = decision_settings(args)
    choice = parse_calibration(args.calibration)
    split = load_category(args.data, args.category, args.dataset)
    config = L2BTConfig(
        teacher=TeacherConfig(
            args.teacher,
            args.weights,
            args.image_size,
            input_mode=args.input_mode,
            tile_size=args.tile_size,
            tile_overlap=args.tile_overlap,
            tile_scale=args.tile_scale,
        ),
        train=TrainConfig(args.epochs, args.batch_size, args.lr, args.seed),
    )
    images = split_calibration(
        [s.image for s in split.train], choice, args.seed, [s.image for s in split.validation]
    )
    if images.note:
        print(images.note)
    data = {
        "root": str(Path(args.data).resolve()),
        "category": args.category,
        "dataset": args.dataset,
        "calibration": images.describe(),
    }
    with bit_depth(args.bit_depth):
        model = L2BT.fit(
            images.train,
            config,
            device=args.device,
            precision=args.precision,
            cache_dir=args.cache_dir,
            progress=show_progress(),
            info={"data": data, "bit_depth": args.bit_depth},  # None: each file's own
            calibration_images=images.calibration,
            false_alarm_rate=args.false_alarm_rate,
            pixel_false_alarm_rate=beta,
            cleanup=cleanup,
        )
    model.save(out, overwrite=args.overwrite)
    losses = model.info["training"]["epoch_losses"]
    print(
        f"trained on {len(images.train)} images of {args.category}; "
        f"final loss {losses[-1]:.4f}; wrote {out}"
    )
    if model.thresholds is not None:
        print(model.thresholds.summary())
    return 0
