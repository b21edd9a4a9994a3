"""The map step (upsample, smooth, crop) on the whole frame against the kept pixels only.

Prints, in one run on one machine, for each image shape (W x H):
1. the map step alone, patch maps -> H × W map: the full-frame road as it was before
   `l2bt.map_operators` (kept in this script as the reference), its box smoothing alone,
   and `anomaly_map.to_image_maps`; medians and the ratio;
2. `L2BT.predict` per image end to end with either map step (the old one through
   `predict_images(to_maps=...)`, the new one as the library runs it); medians, the ratio
   and the map step's share of each;
3. how far the two maps are apart: max |new − old| / max |old|.
All contenders are interleaved (benchmarks/common.py). Random teacher weights and untrained
students: the map costs what a trained model's costs.

    .venv/bin/python benchmarks/bench_postprocess.py            # ViT-S/14, 224 px, pad mode
    .venv/bin/python benchmarks/bench_postprocess.py --quick    # one shape, three repeats
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch.nn import functional as F

from common import interleaved_medians
from l2bt.anomaly_map import SMOOTHING, Smoothing, predict_images, smooth, to_image_maps
from l2bt.config import L2BTConfig, TeacherConfig
from l2bt.model import L2BT
from l2bt.preprocess import InputGeometry
from l2bt.teacher import load_teacher
from l2bt.tiling import TileLayout, frame_to_image, stitch
from l2bt.training import new_students


def full_frame_maps(
    patch_maps: torch.Tensor,
    geometry: InputGeometry,
    smoothing: Smoothing = SMOOTHING,
    align_corners: bool = False,
) -> np.ndarray:
    """The old road: (B · n, h, w) -> (B, H, W) upsampled to the whole frame (each window
    to T × T and stitched, in tiles mode), smoothed there, cropped (and resized)."""
    if geometry.tiles is not None:
        layout = geometry.tiles
        images = patch_maps.reshape(-1, layout.count, *patch_maps.shape[1:])  # (B, n, h, w)
        return np.stack(
            [tiled_frame_map(image, layout, smoothing, align_corners) for image in images]
        )
    frame = full_frame(patch_maps, geometry, align_corners)
    frame = smooth(frame, smoothing)
    rows = slice(geometry.top, geometry.top + geometry.height)
    cols = slice(geometry.left, geometry.left + geometry.width)
    return frame[:, 0, rows, cols].numpy()  # (B, 1, frame_h, frame_w) -> (B, H, W)


def full_frame(
    patch_maps: torch.Tensor, geometry: InputGeometry, align_corners: bool
) -> torch.Tensor:
    """(B, h, w) -> (B, 1, frame_h, frame_w) float32, bilinear."""
    size = (geometry.frame_height, geometry.frame_width)
    maps = patch_maps.float()[:, None]  # (B, h, w) -> (B, 1, h, w)
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=align_corners)


def tiled_frame_map(
    windows: torch.Tensor, layout: TileLayout, smoothing: Smoothing, align_corners: bool
) -> np.ndarray:
    size = (layout.size, layout.size)
    upsampled = F.interpolate(
        windows.float()[:, None], size=size, mode="bilinear", align_corners=align_corners
    )[:, 0]  # (n, 1, T, T) -> (n, T, T)
    frame = smooth(stitch(upsampled, layout)[None, None], smoothing)  # (1, 1, fh, fw)
    return frame_to_image(frame, layout).numpy()


def one_shape(model: L2BT, width: int, height: int, repeats: int) -> None:
    image = np.random.default_rng(width * height).integers(0, 256, (height, width, 3), np.uint8)
    teacher = model.config.teacher
    geometry = InputGeometry.of(teacher, height, width)
    patch_maps = predict_patch_maps(model, image, geometry)
    frame = (
        full_frame(patch_maps, geometry, align_corners=False) if geometry.tiles is None else None
    )
    steps = {
        "full frame": lambda: full_frame_maps(patch_maps, geometry),
        "kept pixels": lambda: to_image_maps(patch_maps, geometry),
    }
    if frame is not None:
        steps["full frame: smoothing alone"] = lambda: smooth(frame)
    step = interleaved_medians(steps, repeats)
    predict = interleaved_medians(
        {
            "full frame": lambda: predict_images(
                model.patch_maps, [image], teacher, model.device, to_maps=full_frame_maps
            ),
            "kept pixels": lambda: model.predict(image),
        },
        repeats,
    )
    old, new = full_frame_maps(patch_maps, geometry)[0], model.predict(image).anomaly_map
    print(f"\n[{width} x {height} px, {geometry.frame_width} x {geometry.frame_height} frame]")
    for name, seconds in step.items():
        print(f"  map step, {name:28s} {1e3 * seconds:9.2f} ms")
    print(
        f"  map step ratio (full / kept)          {step['full frame'] / step['kept pixels']:9.1f} x"
    )
    for name, seconds in predict.items():
        share = step[name] / seconds
        print(f"  predict, {name:29s} {1e3 * seconds:9.2f} ms   map step {100 * share:5.1f} %")
    if frame is not None:
        share = step["full frame: smoothing alone"] / predict["full frame"]
        print(f"  old smoothing alone, share of old predict     {100 * share:5.1f} %")
    ratio = predict["full frame"] / predict["kept pixels"]
    print(f"  predict ratio (full / kept)           {ratio:9.2f} x")
    gap = np.abs(new.astype(np.float64) - old).max() / np.abs(old).max()
    print(f"  max |new - old| / max |old|           {gap:9.1e}")


def predict_patch_maps(model: L2BT, image: np.ndarray, geometry: InputGeometry) -> torch.Tensor:
    """The image's (n, h, w) patch maps, as predict scores them."""
    captured: list[torch.Tensor] = []

    def capture(patch_maps: torch.Tensor, _: InputGeometry) -> np.ndarray:
        captured.append(patch_maps)
        return np.zeros(
            (len(patch_maps) // geometry.n_inputs, geometry.height, geometry.width), np.float32
        )

    predict_images(model.patch_maps, [image], model.config.teacher, model.device, to_maps=capture)
    return captured[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="dinov2_vits14")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--input-mode", default="pad", choices=("pad", "aspect", "tiles"))
    parser.add_argument("--shapes", default="1540x645,1130x460", help="W x H, comma-separated")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="the first shape, three repeats")
    args = parser.parse_args()
    shapes = args.shapes.split(",")[:1] if args.quick else args.shapes.split(",")
    repeats = 3 if args.quick else args.repeats
    torch.manual_seed(0)
    teacher = load_teacher(args.teacher, weights="random")
    config = TeacherConfig(args.teacher, "random", args.image_size, input_mode=args.input_mode)
    forward, backward = new_students(teacher.embed_dim, seed=0)
    model = L2BT.from_parts(L2BTConfig(config), teacher, forward, backward, device="cpu")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.teacher} "
        f"(random weights), {args.image_size} px, {args.input_mode} mode, medians of {repeats}"
    )
    for shape in shapes:
        width, height = (int(v) for v in shape.split("x"))
        one_shape(model, width, height, repeats)


if __name__ == "__main__":
    main()
