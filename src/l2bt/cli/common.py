"""Argument helpers shared by several verbs.

Nothing here imports torch, numpy or a data layout: building the parser (`l2bt --help`)
stays fast, and each verb imports what it needs inside its `run`. Defaults are the
settings' own (`l2bt.config`, which imports nothing heavy), written once there.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from l2bt.config import (
    FALSE_ALARM_RATE,
    INPUT_MODES,
    PATCH_BATCH,
    PRECISIONS,
    TeacherConfig,
    TileSettings,
    TrainConfig,
)

DATASETS = ("mvtec_ad", "visa", "mvtec_ad2", "folder")  # l2bt.data.DATASETS, by name
TEACHER, TILES, TRAIN = TeacherConfig(), TileSettings(), TrainConfig()  # the defaults

if TYPE_CHECKING:
    from l2bt.decisions.calibrate import CalibrationSettings


def add_dataset_args(parser: argparse.ArgumentParser, category_required: bool = True) -> None:
    parser.add_argument("--data", required=True, help="data root folder")
    parser.add_argument(
        "--dataset",
        default="mvtec_ad",
        help=f"data layout: {', '.join(DATASETS)} (default mvtec_ad)",
    )
    if category_required:
        parser.add_argument("--category", required=True, help="category (sub-folder of --data)")


def add_teacher_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", default=TEACHER.variant, help="DINOv2 variant")
    parser.add_argument(
        "--weights",
        default=None,
        help="checkpoint path or URL, or 'random' (default: the official checkpoint, "
        "through torch's hub cache)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=TEACHER.image_size,
        help="input side (pad) or long side (aspect) in pixels",
    )
    parser.add_argument(
        "--input-mode",
        default=TEACHER.input_mode,
        choices=INPUT_MODES,
        help="pad: edge-pad to a square (the paper); aspect: keep the aspect ratio, no "
        "padding; tiles: overlapping --tile-size windows at native resolution",
    )
    parser.add_argument(
        "--tile-size",
        type=int,
        default=TILES.size,
        metavar="T",
        help=f"tiles mode: window side in pixels, a multiple of 14 (default {TILES.size})",
    )
    parser.add_argument(
        "--tile-overlap",
        type=int,
        default=None,
        metavar="PX",
        help="tiles mode: least overlap of neighbouring windows in pixels (default T // 4)",
    )
    parser.add_argument(
        "--tile-scale",
        type=float,
        default=TILES.scale,
        metavar="S",
        help="tiles mode: rescale the image by S in (0, 1] first (default 1, native pixels)",
    )


def add_patch_batch_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--patch-batch",
        type=int,
        default=None,
        metavar="N",
        help="students' training step: N patches drawn across all cached inputs, or 0 for "
        "every patch of --batch-size inputs, the paper's recipe (default: 0 in pad mode, "
        f"{PATCH_BATCH} in tiles and aspect modes)",
    )


def add_force_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--force",
        action="store_true",
        help="run a plan over the sanity limit (tiles mode: a stride under T / 8, or "
        "windows holding more than 64 times an image's pixels)",
    )


def announce_plan(
    teacher: TeacherConfig, cached: Sequence[Path], others: Sequence[Path], force: bool
) -> None:
    """Print the plan of a run over these images (from their headers), or refuse one over
    the sanity limit unless `force` (`l2bt.plan`); imports no torch."""
    from l2bt.data.image_io import image_size
    from l2bt.plan import check_plan, make_plan

    sizes = [image_size(p) for p in [*cached, *others]]
    plan = make_plan(sizes[: len(cached)], teacher, sizes[len(cached) :])
    check_plan(plan, teacher, force)
    print("\n".join(plan.lines()))


def add_calibration_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--calibration",
        default=None,
        metavar="FRACTION|DIR|0",
        help="defect-free images for the thresholds: a fraction of train/good held out "
        "(default: validation/good where the data set has it, else 10 %%, at least 8, none "
        "below 40 training images), a folder of good images, or 0 for none",
    )
    add_decision_args(parser)


def add_decision_args(parser: argparse.ArgumentParser) -> None:
    """The rates thresholds are set at, and the clean-up of masks (SPEC §7)."""
    parser.add_argument(
        "--false-alarm-rate",
        type=float,
        default=FALSE_ALARM_RATE,
        metavar="ALPHA",
        help="guaranteed rate of defect-free parts called defective (default 0.01)",
    )
    parser.add_argument(
        "--pixel-false-alarm-rate",
        type=float,
        default=None,
        metavar="BETA",
        help="also set a segmentation threshold for masks by conformal risk control: the "
        "expected fraction of a good part's pixels flagged is at most BETA (default: off; "
        "masks use the pixel threshold on map maxima)",
    )
    parser.add_argument(
        "--min-region-area",
        type=int,
        default=0,
        metavar="PX",
        help="clean-up: drop mask regions of fewer pixels (default 0: keep all)",
    )
    parser.add_argument(
        "--close-radius",
        type=int,
        default=0,
        metavar="PX",
        help="clean-up: close mask gaps with a disc of this radius (default 0: off)",
    )
    parser.add_argument(
        "--fill-holes", action="store_true", help="clean-up: fill holes in mask regions"
    )


def teacher_config(args: argparse.Namespace) -> TeacherConfig:
    """The teacher and input settings of `add_teacher_args`' flags, checked."""
    tiles = TileSettings(args.tile_size, args.tile_overlap, args.tile_scale)
    return TeacherConfig(
        args.teacher, args.weights, args.image_size, input_mode=args.input_mode, tiles=tiles
    )


def calibration_settings(args: argparse.Namespace) -> CalibrationSettings:
    """The rates and clean-up of `add_decision_args`' flags, checked."""
    from l2bt.decisions.calibrate import CalibrationSettings
    from l2bt.decisions.cleanup import Cleanup
    from l2bt.errors import InputError

    for flag, value in (
        ("--min-region-area", args.min_region_area),
        ("--close-radius", args.close_radius),
    ):
        if value < 0:
            raise InputError(f"{flag} must be 0 or more, got {value}")
    cleanup = Cleanup(args.min_region_area, args.close_radius, args.fill_holes)
    return CalibrationSettings(args.false_alarm_rate, args.pixel_false_alarm_rate, cleanup)


def add_device_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="compute precision of the teacher and students (default fp32)",
    )


def add_trained_run_args(parser: argparse.ArgumentParser, only: str = "") -> None:
    """--device, --precision and --weights of a command that loads a fitted run; `only`
    says which models they apply to, if not all."""
    scope = f"; {only}" if only else ""
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--precision",
        default=None,
        choices=PRECISIONS,
        help=f"compute precision (default: as trained{scope})",
    )
    parser.add_argument(
        "--weights",
        default=None,
        help=f"teacher checkpoint, if it moved since `fit` (must be the same{scope})",
    )


def add_bit_depth_arg(parser: argparse.ArgumentParser, trained: bool = False) -> None:
    default = "the run's, as recorded by fit" if trained else "as each file declares"
    parser.add_argument(
        "--bit-depth",
        type=int,
        default=None,
        metavar="N",
        help="bits per sample of images stored in more than 8 (e.g. 12 for 12-bit camera "
        f"data saved as 16-bit PNG): every such image is scaled by 2^N - 1 (default: {default}; "
        "PNG 16, TIFF its BitsPerSample)",
    )


def run_bit_depth(given: int | None, recorded: int | None) -> None:
    """`--bit-depth` of a command on a trained run may only repeat the run's own (its
    record's, which the predictor applies), so every image of a run is scaled alike."""
    from l2bt.errors import InputError

    if given is not None and given != recorded:
        was = f"{recorded} bits" if recorded else "the depth each file declares"
        raise InputError(f"--bit-depth {given} differs from the run's ({was}, set by fit)")


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every option of `parser` and its sub-commands with a default says it in `--help`
    (unless its help already speaks of its default); flags and unset options do not."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                show_defaults(sub)
            continue
        if not action.option_strings or action.default in (None, False, argparse.SUPPRESS):
            continue
        if action.help is None:
            action.help = "default: %(default)s"
        elif "default" not in action.help:
            action.help += " (default: %(default)s)"
