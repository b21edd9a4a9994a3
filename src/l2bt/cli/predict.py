"""`l2bt predict`: anomaly maps, scores and overlays for image files and folders, and with
thresholds masks, verdicts and regions; or an MVTec AD 2 submission."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from l2bt.cli.common import (
    add_bit_depth_arg,
    add_force_arg,
    add_trained_run_args,
    announce_plan,
    run_bit_depth,
)

if TYPE_CHECKING:
    from l2bt.engines import Engine

ENGINES = ("torch", "onnxruntime")  # l2bt.engines.ENGINES


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="write anomaly maps (TIFF), scores.csv, overlays and decisions",
        description="Folders keep their name and inner tree under --out: "
        "`--out maps/CAT ROOT/CAT/test` writes maps/CAT/test/<defect>/<stem>.tiff. With "
        "thresholds (a run calibrated by fit or calibrate) also <key>_mask.png, a verdict "
        "column in scores.csv and regions.csv. `--submission DIR ROOT/OBJECT` writes an "
        "MVTec AD 2 object's private test splits in the evaluation server's upload layout.",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="run folder written by `l2bt fit`, or a file written by `l2bt export`",
    )
    parser.add_argument("--out", default=None, help="output folder")
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files or folders (with --submission: MVTec AD 2 object folders)",
    )
    parser.add_argument(
        "--submission",
        default=None,
        metavar="DIR",
        help="write the MVTec AD 2 upload layout into DIR instead of --out",
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument(
        "--engine",
        default=None,
        choices=ENGINES,
        help="torch (a run folder) or onnxruntime (an exported file, or a run "
        "folder exported on the fly and cached as <run>/model.onnx); default: "
        "torch for a folder, onnxruntime for a file",
    )
    add_trained_run_args(parser)
    add_bit_depth_arg(parser, trained=True)
    parser.add_argument("--no-overlays", action="store_true", help="skip the PNG overlays")
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=50_000_000,
        help="refuse, from its header, an image whose largest array (the image, the teacher "
        "input or the frame its map is upsampled to) would hold more pixels",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="finish an interrupted predict into the same --out: images whose outputs are "
        "all there are not predicted again (their scores are read back from their maps); "
        "scores.csv and regions.csv are written in full",
    )
    add_force_arg(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from l2bt.errors import InputError

    if (args.out is None) == (args.submission is None):
        raise InputError("give exactly one of --out DIR and --submission DIR")
    if args.submission is not None:
        return _submission(args)
    from l2bt.maps.inputs import collect_inputs
    from l2bt.maps.layout import earlier_prediction

    for flag, value in (("--batch-size", args.batch_size), ("--max-pixels", args.max_pixels)):
        if value < 1:
            raise InputError(f"{flag} must be 1 or more, got {value}")
    items = collect_inputs(args.inputs)
    found = earlier_prediction(Path(args.out))
    if not args.resume and found is not None:
        raise InputError(
            f"--out holds an earlier prediction, finished or not ({found.name}): add --resume "
            "to finish it, or choose another --out",
            args.out,
        )
    _announce(args, [item.image for item in items])
    from l2bt.maps.predict import PredictOptions, predict_to_folder  # torch, from here on

    model = _load(args)
    run_bit_depth(args.bit_depth, model.record.bit_depth)
    tic = time.perf_counter()
    options = PredictOptions(args.batch_size, not args.no_overlays, args.resume, args.max_pixels)
    source = str(Path(args.model).resolve())
    summary = predict_to_folder(model, items, Path(args.out), options, source=source)
    rate = summary.n_images / max(time.perf_counter() - tic, 1e-9)
    print(
        f"wrote {summary.n_images} maps to {args.out}: {rate:.2f} images per second "
        f"(reading and writing included; model {summary.median_seconds:.3f} s per image, median)"
    )
    thresholds = model.record.thresholds
    if thresholds is not None and summary.n_defective is not None:
        print(
            f"{summary.n_defective} of {summary.n_images} images defective "
            f"(image threshold {thresholds.image:.6g}, guaranteed false-alarm rate "
            f"{thresholds.guaranteed_rate:.3g})"
        )
    else:
        print("no thresholds in this run: maps and scores only (see `l2bt calibrate`)")
    return 0


def _submission(args: argparse.Namespace) -> int:
    from l2bt.maps.submission import private_images, write_submission

    objects = [Path(p) for p in args.inputs]
    for folder in objects:
        private_images(folder)  # every layout checked before anything is predicted
    model = _load(args)
    run_bit_depth(args.bit_depth, model.record.bit_depth)
    for folder in objects:
        summary = write_submission(model, folder, Path(args.submission), args.batch_size)
        kinds = "maps and thresholded masks" if summary.thresholded else "maps only (no thresholds)"
        print(f"{summary.object_name}: {summary.n_images} images, {kinds}, in {args.submission}")
    return 0


def _announce(args: argparse.Namespace, images: list[Path]) -> None:
    """The plan of a run folder's teacher over `images` (an exported file has its own)."""
    from l2bt.run import CONFIG_FILE, read_run

    if (Path(args.model) / CONFIG_FILE).is_file():
        teacher = read_run(Path(args.model)).teacher
        if teacher is not None:
            announce_plan(teacher, [], images, args.force)


def _load(args: argparse.Namespace) -> Engine:
    from l2bt.engines import load_engine
    from l2bt.errors import InputError
    from l2bt.methods.l2bt_method import RUN_FOLDER
    from l2bt.run import CONFIG_FILE

    model = Path(args.model)
    benchmark_model = (model / RUN_FOLDER / CONFIG_FILE).is_file()  # models/<method>/<category>
    if benchmark_model and not (model / CONFIG_FILE).is_file():
        raise InputError(f"a benchmark's model folder: pass --model {model / RUN_FOLDER}", model)
    return load_engine(
        args.model, args.engine, device=args.device, precision=args.precision, weights=args.weights
    )
