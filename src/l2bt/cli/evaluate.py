"""`l2bt evaluate`: score anomaly maps from any tool against full-resolution masks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from l2bt.cli.common import add_dataset_args


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="AUPRO by defect size, AUROCs and robustness of a folder of maps",
        description="Reads <maps>/<category>/test/<defect>/<stem>.tiff, one float32 map per "
        "test image at its full size, and <maps>/<category>/scores.csv (key,score) when "
        "present; with a verdict column there and a <stem>_mask.png beside every map, also "
        "scores the decisions. Prints a table and optionally writes the SPEC JSON.",
    )
    add_dataset_args(parser)
    parser.add_argument("--maps", required=True, help="folder of maps in the MVTec layout")
    parser.add_argument("--out", default=None, help="write the metrics as JSON here")
    parser.add_argument(
        "--low-res-protocol",
        type=int,
        default=None,
        metavar="N",
        help="also score the maps as low-resolution benchmarks do: map bilinear and mask "
        "nearest-neighbour resized to N x N (e.g. 256)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="threads counting pixels (default: the cores, at most 4)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from l2bt.data import load_category
    from l2bt.decisions.decide import stored_mask_rules
    from l2bt.maps.evaluate import evaluate_maps
    from l2bt.maps.layout import MapsFolder, read_maps_record
    from l2bt.metrics import format_table
    from l2bt.report.provenance import maps_lines
    from l2bt.utils.atomic import write_text_atomic

    split = load_category(args.data, args.category, args.dataset)
    made_by = read_maps_record(MapsFolder(Path(args.maps) / split.name).run)
    thresholds = None if made_by is None else made_by.record.thresholds
    result = evaluate_maps(
        split,
        args.maps,
        low_res_protocol=args.low_res_protocol,
        workers=args.workers,
        mask_rules=None if thresholds is None else stored_mask_rules(thresholds),
    )
    print("\n".join(maps_lines(made_by)) + "\n")
    print(format_table(result))
    if args.out:
        text = json.dumps(result.to_json_dict(), indent=2, allow_nan=False) + "\n"
        write_text_atomic(Path(args.out), text)
        print(f"\nwrote {args.out}")
    return 0
