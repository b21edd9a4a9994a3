"""Argument helpers shared by several verbs.

Nothing here imports torch, numpy or a data layout: building the parser (`l2bt --help`)
stays fast, and each verb imports what it needs inside its `run`.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

DATASETS = ("mvtec_ad", "visa", "mvtec_ad2", "folder")  # l2bt.data.DATASETS, by name
PRECISIONS = ("fp32", "bf16")  # l2bt.teacher.PRECISIONS
INPUT_MODES = ("pad", "aspect", "tiles")  # l2bt.preprocess.INPUT_MODES

if TYPE_CHECKING:
    from l2bt.decisions.cleanup import Cleanup


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
    parser.add_argument("--teacher", default="dinov2_vitb14_reg", help="DINOv2 variant")
    parser.add_argument(
        "--weights",
        default=None,
        help="checkpoint path or URL, or 'random' (default: the official checkpoint, "
        "through torch's hub cache)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=1036,
        help="input side (pad) or long side (aspect) in pixels",
    )
    parser.add_argument(
        "--input-mode",
        default="pad",
        choices=INPUT_MODES,
        help="pad: edge-pad to a square (the paper); aspect: keep the aspect ratio, no "
        "padding; tiles: overlapping --tile-size windows at native resolution",
    )
    parser.add_argument(
        "--tile-size",
        type=int,
        default=518,
        metavar="T",
        help="tiles mode: window side in pixels, a multiple of 14 (default 518)",
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
        default=1.0,
        metavar="S",
        help="tiles mode: rescale the image by S in (0, 1] first (default 1, native pixels)",
    )


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
        default=0.01,
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


def decision_settings(args: argparse.Namespace) -> tuple[float | None, Cleanup]:
    """(β or None, the clean-up) from the flags of `add_decision_args`, checked."""
    from l2bt.decisions.cleanup import Cleanup
    from l2bt.decisions.risk import check_pixel_false_alarm_rate
    from l2bt.decisions.thresholds import check_false_alarm_rate
    from l2bt.errors import InputError

    check_false_alarm_rate(args.false_alarm_rate)
    if args.pixel_false_alarm_rate is not None:
        check_pixel_false_alarm_rate(args.pixel_false_alarm_rate)
    for flag, value in (
        ("--min-region-area", args.min_region_area),
        ("--close-radius", args.close_radius),
    ):
        if value < 0:
            raise InputError(f"{flag} must be 0 or more, got {value}")
    cleanup = Cleanup(args.min_region_area, args.close_radius, args.fill_holes)
    return args.pixel_false_alarm_rate, cleanup


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


def show_progress() -> bool:
    """Progress of long work (`l2bt.utils.progress`: a bar on a terminal, a line about every
    20 s in a log), unless L2BT_PROGRESS=off."""
    return os.environ.get("L2BT_PROGRESS", "on").lower() not in ("off", "0", "no")


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


def run_bit_depth(given: int | None, recorded: int | None) -> int | None:
    """The bit depth to read a trained run's images with: the one its fit recorded;
    `--bit-depth` may only repeat it, so every image of a run is scaled alike."""
    from l2bt.errors import InputError

    if given is not None and given != recorded:
        was = f"{recorded} bits" if recorded else "the depth each file declares"
        raise InputError(f"--bit-depth {given} differs from the run's ({was}, set by fit)")
    return recorded


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
