"""`l2bt serve`: the HTTP service (SPEC §8) for a run folder (torch) or an exported ONNX
file (onnxruntime)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from l2bt.cli.common import add_trained_run_args

if TYPE_CHECKING:
    from l2bt.engines import Engine

KILOBYTE = 1024
MEGABYTE = 1024 * KILOBYTE


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="an HTTP service: POST an image, get its map, score and decision",
        description="POST /v1/predict with one image (multipart field 'image', or the raw "
        "bytes; ?map=tiff|png, ?mask=png for base64 files in the JSON); GET /v1/health, "
        "GET /v1/model. Requests of one image size are predicted in batches by one worker.",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="run folder written by `l2bt fit`, or FILE.onnx from `l2bt export`",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    parser.add_argument("--port", type=int, default=8000, help="default 8000; 0 picks a free one")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=4,
        help="most images of one size predicted together (default 4)",
    )
    parser.add_argument(
        "--queue-size",
        type=int,
        default=16,
        help="most requests in progress at once; more are answered 503 (default 16)",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=50_000_000,
        help="most pixels of the largest array an image needs (the image, "
        "the teacher input, or in pad mode the max(H, W) square its map is "
        "upsampled to), checked from the header before decoding; more is "
        "413 (default 50,000,000)",
    )
    parser.add_argument(
        "--max-body-mb",
        type=float,
        default=200.0,
        help="largest request body in MiB (default 200); all bodies "
        "together hold at most --queue-size times this",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="a request body that pauses longer than this, or takes longer "
        "than this plus its size at --min-body-rate, is answered 408 and "
        "its connection closed (default 30)",
    )
    parser.add_argument(
        "--min-body-rate",
        type=float,
        default=64.0,
        metavar="KIB_PER_S",
        help="slowest average upload accepted past --body-timeout, in KiB/s (default 64)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="on Ctrl-C or SIGTERM, bodies still arriving are answered 503 "
        "and requests being predicted get this long to finish (default 10)",
    )
    add_trained_run_args(parser, only="run folders only")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from l2bt.serve import ServeSettings, create_app, run_server

    settings = ServeSettings(
        batch_size=args.batch_size,
        queue_size=args.queue_size,
        max_pixels=args.max_pixels,
        max_body_bytes=int(args.max_body_mb * MEGABYTE),
        body_timeout=args.body_timeout,
        min_body_rate=args.min_body_rate * KILOBYTE,
        shutdown_timeout=args.shutdown_timeout,
    )
    predictor, name = _load(args)
    run_server(create_app(predictor, name, settings), args.host, args.port)
    return 0


def _load(args: argparse.Namespace) -> tuple[Engine, str]:
    """The predictor for --model and its name in the answers."""
    from l2bt.engines import load_engine

    path = Path(args.model)
    if path.suffix.lower() == ".onnx":
        engine = load_engine(path, "onnxruntime", device=args.device, precision=args.precision)
        return engine, path.stem
    engine = load_engine(
        path, "torch", device=args.device, precision=args.precision, weights=args.weights
    )
    return engine, path.name
