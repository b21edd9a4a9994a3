"""`l2bt make-synthetic`: a high-resolution data set with exact masks, MVTec AD layout."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "make-synthetic",
        help="generate textured surfaces with defects from a few px up",
    )
    parser.add_argument("--out", required=True, help="data root to write the category into")
    parser.add_argument("--size", type=int, default=2048, help="long side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--category", default="synthetic")
    parser.add_argument("--n-train", type=int, default=20)
    parser.add_argument("--n-test-good", type=int, default=5)
    parser.add_argument("--n-test-defective", type=int, default=16)
    parser.add_argument("--overwrite", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from l2bt.data.synthetic import SyntheticConfig, write_synthetic

    config = SyntheticConfig(
        args.size, args.seed, args.category, args.n_train, args.n_test_good, args.n_test_defective
    )
    target = write_synthetic(args.out, config, overwrite=args.overwrite)
    print(
        f"wrote {args.n_train} training and {args.n_test_good + args.n_test_defective} test "
        f"images of {config.shape[1]}x{config.shape[0]} to {target}"
    )
    return 0
