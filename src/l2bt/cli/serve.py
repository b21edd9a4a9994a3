"""`l2bt serve`: the HTTP service (SPEC §8, §13) for a folder of models (run folders and
exported ONNX files, each under its entry's name) or for one of them."""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from l2bt.cli.common import add_trained_run_args

if TYPE_CHECKING:
    from l2bt.engines import Engine
    from l2bt.serve import ModelSource

KILOBYTE = 1024
MEGABYTE = 1024 * KILOBYTE


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="an HTTP service: POST an image, get its map, score and decision",
        description="POST /v1/models/NAME/predict (or /v1/predict with one model) with one "
        "image (multipart field 'image', or the raw bytes; ?map=tiff|png, ?mask=png for "
        "base64 files in the JSON); GET /v1/models, /metrics, /v2/health/ready. Each model "
        "has its own worker, batching requests of one image size; a model whose files are "
        "replaced is loaded beside the live version and swapped in without a dropped request.",
    )
    served = parser.add_mutually_exclusive_group(required=True)
    served.add_argument(
        "--models",
        metavar="DIR",
        help="a folder of run folders and .onnx files, each served under its entry's name",
    )
    served.add_argument(
        "--model",
        help="one run folder written by `l2bt fit`, or FILE.onnx from `l2bt export`",
    )
    parser.add_argument(
        "--poll",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="look at the served files this often and load a replaced model (0: never)",
    )
    parser.add_argument(
        "--max-loaded",
        type=int,
        default=None,
        metavar="N",
        help="most models in memory; the least recently used is unloaded past N and "
        "loaded again on its next request (default: all)",
    )
    parser.add_argument(
        "--drift-alarm",
        type=float,
        default=0.01,
        metavar="DELTA",
        help="flag a model 'calibration: drifted' when its good parts stop looking like its "
        "calibration images; on an unchanged line the flag is raised with probability at "
        "most DELTA",
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
        help="most requests of one model in progress at once; more are answered 503 (default 16)",
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
    _check_paths(args)
    from l2bt.serve import ServeSettings

    settings = ServeSettings(
        batch_size=args.batch_size,
        queue_size=args.queue_size,
        max_pixels=args.max_pixels,
        max_body_bytes=int(args.max_body_mb * MEGABYTE),
        body_timeout=args.body_timeout,
        min_body_rate=args.min_body_rate * KILOBYTE,
        shutdown_timeout=args.shutdown_timeout,
        poll_seconds=args.poll,
        max_loaded=args.max_loaded,
        drift_alarm=args.drift_alarm,
    )
    from l2bt.serve import Repository, ServeMetrics, repository_app, run_server

    folder, sources = _sources(args)
    metrics = ServeMetrics()
    repository = Repository(sources, partial(_load, args), settings, metrics, folder)
    run_server(repository_app(repository, metrics), args.host, args.port)
    return 0


def _check_paths(args: argparse.Namespace) -> None:
    """The served model or folder is there (before the service's imports: torch)."""
    from l2bt.errors import InputError

    if args.model is not None and not Path(args.model).exists():
        raise InputError("model not found", args.model)
    if args.model is None and not Path(args.models).is_dir():
        raise InputError("--models must be a folder", args.models)


def _sources(args: argparse.Namespace) -> tuple[Path | None, list[ModelSource]]:
    """The served folder (None for --model) and its models."""
    from l2bt.errors import InputError
    from l2bt.serve import ModelSource, discover

    if args.model is not None:
        path = Path(args.model)
        return None, [ModelSource(path.stem if path.is_file() else path.name, path)]
    folder = Path(args.models)
    sources = discover(folder)
    if not sources:
        raise InputError("no run folders (with config.json) nor .onnx files here", folder)
    return folder, sources


def _load(args: argparse.Namespace, path: Path) -> Engine:
    """The predictor of one served entry: torch for a run folder, onnxruntime for a file."""
    from l2bt.engines import load_engine

    if path.is_file():
        return load_engine(path, "onnxruntime", device=args.device, precision=args.precision)
    return load_engine(
        path, "torch", device=args.device, precision=args.precision, weights=args.weights
    )
