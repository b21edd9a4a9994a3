"""`l2bt serve`: the HTTP service (SPEC §8) for a run folder (torch) or an exported ONNX
file (onnxruntime)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from l2bt.cli.common import add_trained_run_args

MEGABYTE = 1024 * 1024


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="an HTTP service: POST an image, get its map, score and decision",
        description="POST /v1/predict with one image (multipart field 'image', or the raw "
        "bytes; ?map=tiff|png, ?mask=png for base64 files in the JSON); GET /v1/health, "
        "GET /v1/model. Requests of one image size are predicted in batches by one worker.",
    )
    parser.add_argument("--model", required=True,
                        help="run folder written by `l2bt fit`, or FILE.onnx from `l2bt export`")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="default 8000; 0 picks a free one")
    parser.add_argument("--batch-size", type=int, default=4,
                        help="most images of one size predicted together (default 4)")
    parser.add_argument("--queue-size", type=int, default=16,
                        help="most requests in progress at once; more are answered 503 "
                        "(default 16)")
    parser.add_argument("--max-pixels", type=int, default=50_000_000,
                        help="largest image, width x height, checked before decoding "
                        "(default 50,000,000)")
    parser.add_argument("--max-body-mb", type=float, default=200.0,
                        help="largest request body in MiB (default 200)")
    add_trained_run_args(parser, only="run folders only")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from l2bt.serve import ServeSettings, create_app, run_server

    settings = ServeSettings(batch_size=args.batch_size, queue_size=args.queue_size,
                             max_pixels=args.max_pixels,
                             max_body_bytes=int(args.max_body_mb * MEGABYTE))
    predictor, description = _load(args)
    run_server(create_app(predictor, description, settings), args.host, args.port)
    return 0


def _load(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The predictor and its description ("run": the model's name) for --model."""
    path = Path(args.model)
    if path.suffix.lower() == ".onnx":
        from l2bt.engines import load_engine

        engine = load_engine(path, engine="onnxruntime", device=args.device,
                             precision=args.precision)
        return engine, {**engine.describe(), "run": path.stem}
    from l2bt.model import L2BT

    model = L2BT.load(path, device=args.device, precision=args.precision, weights=args.weights)
    return model, {**model.describe(), "run": path.name}
