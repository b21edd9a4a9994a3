"""`l2bt fit`: train the students on a category's defect-free images, and calibrate
thresholds on defect-free images they never saw (SPEC §7)."""

from __future__ import annotations

import argparse
from pathlib import Path

from l2bt.cli.common import (
    TRAIN,
    add_bit_depth_arg,
    add_calibration_args,
    add_dataset_args,
    add_device_args,
    add_force_arg,
    add_patch_batch_arg,
    add_teacher_args,
    announce_plan,
    calibration_settings,
    teacher_config,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("fit", help="train a model on defect-free images")
    add_dataset_args(parser)
    parser.add_argument("--out", required=True, help="run folder to write")
    add_teacher_args(parser)
    parser.add_argument("--epochs", type=int, default=TRAIN.epochs)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=TRAIN.batch_size,
        help="images (windows in tiles mode) per training step when --patch-batch is 0",
    )
    add_patch_batch_arg(parser)
    parser.add_argument("--lr", type=float, default=TRAIN.lr)
    parser.add_argument("--seed", type=int, default=TRAIN.seed)
    add_bit_depth_arg(parser)
    add_calibration_args(parser)
    add_device_args(parser)
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="feature cache folder (default $L2BT_CACHE_DIR or ~/.cache/l2bt)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    add_force_arg(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from l2bt.config import L2BTConfig, TrainConfig
    from l2bt.errors import InputError
    from l2bt.run import check_bit_depth

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise InputError("output folder exists and is not empty (use --overwrite)", out)
    train = TrainConfig(args.epochs, args.batch_size, args.lr, args.seed, args.patch_batch)
    config = L2BTConfig(teacher_config(args), train)
    settings = calibration_settings(args)
    check_bit_depth(args.bit_depth)
    from l2bt.data import load_category
    from l2bt.decisions.calibration_images import parse_calibration, split_calibration
    from l2bt.run import DataFacts

    choice = parse_calibration(args.calibration)
    split = load_category(args.data, args.category, args.dataset)
    images = split_calibration(
        [s.image for s in split.train], choice, args.seed, [s.image for s in split.validation]
    )
    if images.note:
        print(images.note)
    announce_plan(config.teacher, images.train, images.calibration, args.force)
    from l2bt.model import L2BT  # torch: once every argument is checked

    data = DataFacts(str(Path(args.data).resolve()), args.category, args.dataset)
    model = L2BT.fit(
        images.train,
        config,
        device=args.device,
        precision=args.precision,
        bit_depth=args.bit_depth,
        cache_dir=args.cache_dir,
        data=data,
    )
    if images.calibration:
        model.calibrate(images.calibration, settings, source=images.source)
    model.save(out, overwrite=args.overwrite)
    assert model.record.training is not None
    losses = model.record.training.epoch_losses
    print(
        f"trained on {len(images.train)} images of {args.category}; "
        f"final loss {losses[-1]:.4f}; wrote {out}"
    )
    if model.thresholds is not None:
        print(model.thresholds.summary())
    return 0
