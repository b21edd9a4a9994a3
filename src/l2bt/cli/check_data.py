"""`l2bt check-data`: every problem of a data tree, one line each."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from l2bt.cli.common import add_dataset_args


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("check-data", help="report every problem of a data tree")
    add_dataset_args(parser, category_required=False)
    parser.add_argument("--category", default=None, help="one category (default: all)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from l2bt.data import list_categories
    from l2bt.data.checks import check_category

    categories = [args.category] if args.category else list_categories(args.data, args.dataset)
    if not categories:
        print(
            f"l2bt check-data: error: {args.data}: no categories found for the "
            f"{args.dataset} layout",
            file=sys.stderr,
        )
        return 2
    failed = False
    for category in categories:
        report = check_category(args.data, category, args.dataset)
        for problem in report.problems:
            print(problem, file=sys.stderr)
        failed |= bool(report.problems)
        if report.split is not None:
            kinds = Counter(s.defect for s in report.split.test)
            summary = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
            status = f"{len(report.problems)} problem(s)" if report.problems else "OK"
            print(
                f"{category}: {status}: {len(report.split.train)} train, "
                f"{len(report.split.test)} test ({summary})"
            )
    return 2 if failed else 0
