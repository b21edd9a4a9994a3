"""Argument helpers shared by several verbs.

Nothing here imports torch, numpy or a data layout: building the parser (`l2bt --help`)
stays fast, and each verb imports what it needs inside its `run`.
"""

from __future__ import annotations

import argparse
import sys

DATASETS = ("mvtec_ad", "visa", "mvtec_ad2", "folder")  # l2bt.data.DATASETS, by name
PRECISIONS = ("fp32", "bf16")  # l2bt.teacher.PRECISIONS


def add_dataset_args(parser: argparse.ArgumentParser, category_required: bool = True) -> None:
    parser.add_argument("--data", required=True, help="data root folder")
    parser.add_argument(
        "--dataset", default="mvtec_ad", help=f"data layout: {', '.join(DATASETS)} "
        "(default mvtec_ad)"
    )
    if category_required:
        parser.add_argument("--category", required=True, help="category (sub-folder of --data)")


def add_teacher_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", default="dinov2_vitb14_reg", help="DINOv2 variant")
    parser.add_argument(
        "--weights", default=None,
        help="checkpoint path or URL, or 'random' (default: the official checkpoint, "
        "through torch's hub cache)",
    )
    parser.add_argument("--image-size", type=int, default=1036, help="input side in pixels")


def add_device_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--precision", default="fp32", choices=PRECISIONS,
        help="compute precision of the teacher and students (default fp32)",
    )


def show_progress() -> bool:
    """Progress bars only when a person is watching a terminal."""
    return sys.stderr.isatty()
