"""`l2bt export`: a run folder as one ONNX file (SPEC §8) that takes a uint8 image of any
size and gives its map, score and, with thresholds, mask and verdict."""

from __future__ import annotations

import argparse


def image_hw(text: str) -> tuple[int, int]:
    """'H,W' -> (H, W), both positive."""
    try:
        height, width = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H,W (two integers), got {text!r}") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"height and width must be positive, got {text!r}")
    return height, width


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write the model as one ONNX file (pre- and post-processing inside)",
        description="Input `image`: uint8 (H, W, 3) RGB of any size (aspect and tiles "
        "mode: of the --image-hw size). Outputs: anomaly_map "
        "float32 (H, W), score float32 and, with thresholds, mask uint8 (H, W, 0/255) and "
        "defective bool. The run's config.json is in the file's metadata (l2bt_config). "
        "fp32. Predict with `l2bt predict --model FILE.onnx`.",
    )
    parser.add_argument("--model", required=True, help="run folder written by `l2bt fit`")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset, at least 18")
    parser.add_argument(
        "--image-hw",
        type=image_hw,
        default=None,
        metavar="H,W",
        help="aspect- and tiles-mode runs only: the size of the images the graph will "
        "see (the teacher grid, or the windows, are fixed in the graph)",
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="teacher checkpoint, if it moved since `fit` (must be the same)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from l2bt.run import read_run

    read_run(Path(args.model))  # a run folder, its config.json checked, before torch
    from l2bt.export.exporter import check_opset, export_onnx, require_export_tools
    from l2bt.model import L2BT

    out = Path(args.out)
    require_export_tools(out)  # before the model is loaded
    check_opset(args.opset)
    model = L2BT.load(args.model, device="cpu", weights=args.weights)
    info = export_onnx(model, out, args.opset, args.image_hw)
    height, width = info.input_hw
    print(
        f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, opset {info.opset}; "
        f"{info.input_mode} mode, {height} x {width} teacher input; outputs "
        f"{', '.join(info.outputs)})"
    )
    return 0
