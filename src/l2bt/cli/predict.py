"""`l2bt predict`: anomaly maps, scores and overlays for image files and folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from l2bt.cli.common import PRECISIONS, show_progress


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="write anomaly maps (TIFF), scores.csv and overlays",
        description="Folders keep their name and inner tree under --out: "
        "`--out maps/CAT ROOT/CAT/test` writes maps/CAT/test/<defect>/<stem>.tiff.",
    )
    parser.add_argument("--model", required=True, help="run folder written by `l2bt fit`")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", default=None, choices=PRECISIONS,
                        help="teacher precision (default: as trained)")
    parser.add_argument("--weights", default=None,
                        help="teacher checkpoint, if it moved since `fit` (must be the same)")
    parser.add_argument("--no-overlays", action="store_true", help="skip the PNG overlays")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from l2bt.inference import collect_inputs, predict_to_folder
    from l2bt.model import L2BT

    items = collect_inputs(args.inputs)
    model = L2BT.load(args.model, device=args.device, precision=args.precision,
                      weights=args.weights)
    normal = model.info.get("normal_patch_scores")
    colour_range = (normal["median"], normal["max"]) if normal else None
    summary = predict_to_folder(model, items, Path(args.out), args.batch_size,
                                overlays=not args.no_overlays, colour_range=colour_range,
                                progress=show_progress())
    print(f"wrote {summary.n_images} maps to {args.out} "
          f"({summary.median_seconds:.3f} s per image, median)")
    return 0

