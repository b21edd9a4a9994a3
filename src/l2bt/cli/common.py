"""Argument helpers shared by several verbs."""

from __future__ import annotations

import argparse

from l2bt.data import DATASETS


def add_dataset_args(parser: argparse.ArgumentParser, category_required: bool = True) -> None:
    parser.add_argument("--data", required=True, help="data root folder")
    parser.add_argument(
        "--dataset", default="mvtec_ad", help=f"data layout: {', '.join(sorted(DATASETS))} "
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
        "--precision", default="fp32", choices=("fp32", "bf16"),
        help="teacher precision (bf16 uses autocast)",
    )


def show_progress() -> bool:
    """Progress bars only when a person is watching a terminal."""
    import sys

    return sys.stderr.isatty()
