"""`l2bt view`: one HTML page to browse a maps folder or a benchmark, offline."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "view",
        help="write one HTML page to browse maps, scores and regions",
        description="Thumbnails sorted by score (most anomalous first), verdicts, and per "
        "image its overlay, the regions and the score against the threshold. DIR is a "
        "folder written by `l2bt predict` (scores.csv inside), a folder of such folders, or "
        "a benchmark folder. The page is self-contained and links the full-size files by "
        "relative paths: keep it beside them.",
    )
    parser.add_argument("folder", metavar="DIR", help="maps folder or benchmark folder")
    parser.add_argument(
        "--out",
        default=None,
        metavar="FILE.html",
        help="the page to write (default DIR/index.html)",
    )
    parser.add_argument(
        "--model",
        default=None,
        metavar="RUN",
        help="run folder whose thresholds and colour range apply to the maps",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from l2bt.view.page import write_page

    summary = write_page(
        Path(args.folder),
        None if args.out is None else Path(args.out),
        None if args.model is None else Path(args.model),
    )
    print(
        f"wrote {summary.path}: {summary.n_images} images in {summary.n_sections} "
        f"section(s); open it in a browser"
    )
    return 0
