"""`l2bt evaluate`: score anomaly maps from any tool against full-resolution masks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from l2bt.cli.common import add_dataset_args, show_progress


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
    from l2bt.maps.evaluate import evaluate_maps, return_large_frees
    from l2bt.maps.layout import MapsFolder, read_run_description
    from l2bt.metrics import format_table
    from l2bt.report.provenance import maps_lines
    from l2bt.utils.atomic import write_text_atomic

    split = load_category(args.data, args.category, args.dataset)
    return_large_frees()  # this process only evaluates: freed memory goes back at once
    run_file = MapsFolder(Path(args.maps) / split.name).run
    described = read_run_description(run_file)
    result = evaluate_maps(
        split,
        args.maps,
        progress=show_progress(),
        low_res_protocol=args.low_res_protocol,
        workers=args.workers,
        mask_rules=_stored_rules(described, run_file),
    )
    print("\n".join(maps_lines(described)) + "\n")
    print(format_table(result))
    if args.out:
        text = json.dumps(result.to_json_dict(), indent=2, allow_nan=False) + "\n"
        write_text_atomic(Path(args.out), text)
        print(f"\nwrote {args.out}")
    return 0


def _stored_rules(described: dict[str, Any] | None, path: Path) -> dict[str, Any] | None:
    """SegF1 is reported at each threshold the model that made the maps stored (run.json)."""
    from l2bt.decisions.decide import stored_mask_rules
    from l2bt.decisions.thresholds import Thresholds
    from l2bt.errors import InputError

    if not described or not described.get("thresholds"):
        return None
    try:
        return stored_mask_rules(Thresholds.from_dict(described["thresholds"]))
    except InputError as e:
        raise InputError(e.problem, path) from e
