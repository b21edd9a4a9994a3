"""The GPU path in one short run: teacher latency, predict throughput, one training epoch.

Measures, on `--device` (default cuda), with random weights (no downloads):
1. teacher latency per image at `--image-size` (default ViT-B/14-reg at 1036 px), fp32 and
   bf16, at batch 1 and each batch of `--batches`: CUDA events around `--repeats` calls
   after `--warmup` calls (on a CPU, wall time);
2. predict throughput, images/s, end to end through `L2BT.predict_batch` (teacher pixels
   and scores on the host's cores, teacher, students and post-processing on the device,
   maps back on the host) on square images of `--image-size` and on `--other-hw` images
   in bf16, at the best bf16 teacher batch, with the host work per image done serially
   (teacher pixels, top-0.1 % score); and the seconds per image to bring maps and
   teacher features to the host through pageable and through page-locked memory
   (`l2bt.utils.device.to_host`, checked equal);
3. one epoch of student training over `--train-images` cached images (random fp16
   features in host memory, as the feature cache holds them), fp32 and bf16;
4. tiles mode: seconds per `--tiles-hw` image (default 5 MP) in T = 518 windows, bf16.
Targets on an H100/H200: teacher bf16 ≤ 6 ms per image (the floor at 790 TFLOP/s is
2.6 ms), predict ≥ 100 images/s. Prints a table and writes the figures to `--json`.

    python benchmarks/bench_gpu.py                              # the GPU run (~2 min)
    python benchmarks/bench_gpu.py --device cpu --quick         # a smoke test (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from common import median_seconds, teacher_flops, wall_seconds
from l2bt import L2BT
from l2bt.anomaly_map import image_score
from l2bt.cli.export import image_hw
from l2bt.config import L2BTConfig, TeacherConfig, TileSettings, TrainConfig
from l2bt.features import TrainFeatures
from l2bt.preprocess import InputGeometry, teacher_pixels
from l2bt.teacher import Teacher, load_teacher
from l2bt.training import new_students, train_students
from l2bt.utils.device import to_host

LAYERS = (7, 11)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cuda_event_seconds(function: Callable[[], object]) -> float:
    """Device seconds of one call, between two CUDA events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    function()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def device_median_seconds(
    function: Callable[[], object], device: torch.device, warmup: int, repeats: int
) -> float:
    """Median seconds per call: CUDA events on a GPU (device time), wall time on a CPU."""
    timer = cuda_event_seconds if device.type == "cuda" else wall_seconds

    def call() -> None:
        function()
        synchronize(device)

    return median_seconds(call, repeats, warmup, timer)


def image_flops(teacher: Teacher, image_size: int) -> float:
    """FLOPs of one image through blocks 0..max(LAYERS)."""
    n = (image_size // 14) ** 2 + 1 + teacher.num_register_tokens
    return teacher_flops(n, teacher.embed_dim, max(LAYERS) + 1)


def bench_teacher(
    teacher: Teacher, args: argparse.Namespace, device: torch.device
) -> dict[str, dict[int, float]]:
    """Seconds per image, per precision and batch."""
    latency: dict[str, dict[int, float]] = {"fp32": {}, "bf16": {}}
    for precision in latency:
        for batch in sorted({1, *args.batches}):
            x = torch.randn(batch, 3, args.image_size, args.image_size, device=device)
            seconds = device_median_seconds(
                lambda x=x, p=precision: teacher.features(x, LAYERS, p),
                device,
                args.warmup,
                args.repeats,
            )
            latency[precision][batch] = seconds / batch
    return latency


def bench_predict(
    teacher: Teacher,
    batch: int,
    args: argparse.Namespace,
    device: torch.device,
    hw: tuple[int, int],
) -> dict[str, float]:
    """Images/s through L2BT.predict_batch (bf16) on H × W = `hw` images, wall time with
    the device synchronised."""
    config = L2BTConfig(TeacherConfig(args.teacher, "random", args.image_size))
    forward, backward = new_students(teacher.embed_dim, seed=0)
    model = L2BT.from_parts(config, teacher, forward, backward, device=device, precision="bf16")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for _ in range(batch)]
    for _ in range(args.warmup):
        model.predict_batch(images)
    synchronize(device)
    tic = time.perf_counter()
    for _ in range(args.predict_batches):
        model.predict_batch(images)
    synchronize(device)
    seconds = time.perf_counter() - tic
    n_images = batch * args.predict_batches
    geometry = InputGeometry.of(config.teacher, *hw)
    host = {  # per image, one after another (predict_batch spreads them over the cores)
        "teacher_pixels": median_seconds(lambda: teacher_pixels(images[0], geometry), args.repeats),
        "score": median_seconds(
            lambda: image_score(images[0][..., 0].astype(np.float32)), args.repeats
        ),
    }
    return {
        "images_per_second": n_images / seconds,
        "batch": batch,
        "image_hw": list(hw),
        "images": n_images,
        "host_seconds_per_image": host,
    }


def bench_tiles(teacher: Teacher, args: argparse.Namespace, device: torch.device) -> dict:
    """Tiles mode end to end (bf16): seconds per `--tiles-hw` image at native scale through
    `L2BT.predict`, against the teacher alone on full batches of 16 windows."""
    height, width = args.tiles_hw
    teacher_config = TeacherConfig(
        args.teacher,
        "random",
        args.image_size,
        input_mode="tiles",
        tiles=TileSettings(size=args.tile_size),
    )
    forward, backward = new_students(teacher.embed_dim, seed=0)
    model = L2BT.from_parts(
        L2BTConfig(teacher_config), teacher, forward, backward, device=device, precision="bf16"
    )
    image = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)

    def predict() -> None:
        model.predict(image)
        synchronize(device)

    seconds = median_seconds(predict, args.repeats, args.warmup, wall_seconds)
    x = torch.randn(16, 3, args.tile_size, args.tile_size, device=device)
    teacher_seconds = device_median_seconds(
        lambda: teacher.features(x, LAYERS, "bf16"), device, args.warmup, args.repeats
    )
    windows = InputGeometry.of(teacher_config, height, width).n_inputs
    return {
        "image_hw": [height, width],
        "tile_size": args.tile_size,
        "windows": windows,
        "seconds_per_image": seconds,
        "megapixels_per_second": height * width / 1e6 / seconds,
        "teacher_seconds_per_window": teacher_seconds / 16,
        "teacher_share_of_predict": windows * teacher_seconds / 16 / seconds,
    }


def bench_copies(dim: int, batch: int, args: argparse.Namespace, device: torch.device) -> dict:
    """Seconds per image to bring a batch's maps (float32, image-sized) and its teacher
    features (float16, both layers) to the host: `.cpu()` into pageable memory against
    `to_host` through page-locked memory; the two must agree exactly."""
    grid = args.image_size // 14
    maps = torch.rand(batch, args.image_size + 2, args.image_size + 2, device=device)
    maps = maps[:, 1:-1, 1:-1]  # a crop, as the maps are: (B, H, W), not contiguous
    features = torch.randn(batch, 2, grid * grid, dim, device=device).half()
    figures = {}
    for name, values in (("maps", maps), ("features", features)):
        if not np.array_equal(to_host(values), values.cpu().numpy()):
            raise AssertionError(f"to_host changed the {name}' values")
        for road, copy in (
            ("pageable", lambda v=values: v.cpu().numpy()),
            ("pinned", lambda v=values: to_host(v)),
        ):
            figures[f"{name}_{road}"] = median_seconds(copy, args.repeats, args.warmup) / batch
    return figures


def random_cached_features(
    n_images: int, grid: int, dim: int, device: torch.device, folder: Path
) -> TrainFeatures:
    """Random fp16 features in host memory as the cache holds them: (n·grid², D) rows of
    n grid × grid images, made on the device."""
    generator = torch.Generator(device=device).manual_seed(0)
    per_image = grid * grid
    early = np.empty((n_images * per_image, dim), np.float16)
    late = np.empty_like(early)
    for i in range(n_images):
        rows = slice(i * per_image, (i + 1) * per_image)
        a = torch.randn(per_image, dim, generator=generator, device=device)
        b = torch.tanh(a) + 0.3 * torch.randn(per_image, dim, generator=generator, device=device)
        early[rows], late[rows] = a.half().cpu().numpy(), b.half().cpu().numpy()
    return TrainFeatures(early, late, grids=np.full((n_images, 2), grid), folder=folder)


def bench_training(
    teacher: Teacher, args: argparse.Namespace, device: torch.device
) -> dict[str, float]:
    """Seconds for one epoch over `--train-images` images, per precision."""
    grid = args.image_size // 14
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        features = random_cached_features(
            args.train_images, grid, teacher.embed_dim, device, Path(tmp)
        )
        first = int(features.offsets[min(4, len(features))])  # the first (up to) 4 images
        warm = TrainFeatures(
            features.early[:first],
            features.late[:first],
            grids=features.grids[:4],
            folder=Path(tmp),
        )
        for precision in ("fp32", "bf16"):
            train_students(warm, TrainConfig(epochs=1), device, precision)  # warm-up
            synchronize(device)
            tic = time.perf_counter()
            train_students(features, TrainConfig(epochs=1), device, precision)
            synchronize(device)
            seconds[precision] = time.perf_counter() - tic
    return seconds


def describe(device: torch.device) -> dict[str, object]:
    info: dict[str, object] = {"torch": torch.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        info |= {"device": torch.cuda.get_device_name(device), "cuda": torch.version.cuda}
    else:
        info |= {"device": f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"}
    return info


def print_table(figures: dict, flops: float) -> None:
    print(
        f"\n{figures['machine']['device']}, torch {figures['machine']['torch']}; "
        f"{figures['teacher_variant']} at {figures['image_size']} px, "
        f"{flops / 1e9:.0f} GFLOP per image"
    )
    print(
        f"{'teacher':<12}"
        + "".join(f" {f'batch {b}':>22}" for b in figures["teacher_seconds_per_image"]["bf16"])
    )
    for precision, row in figures["teacher_seconds_per_image"].items():
        cells = [f"{1e3 * s:.2f} ms {flops / s / 1e12:.3g} TF/s" for s in row.values()]
        print(f"{precision:<12}" + "".join(f" {c:>22}" for c in cells))
    best = figures["best_bf16"]
    print(
        f"best bf16: {1e3 * best['seconds_per_image']:.2f} ms per image at batch "
        f"{best['batch']} (target <= 6 ms)"
    )
    for predict in (figures["predict"], figures["predict_other_shape"]):
        host = predict["host_seconds_per_image"]
        print(
            f"predict, bf16, batch {predict['batch']}, {predict['image_hw'][0]} x "
            f"{predict['image_hw'][1]} images: {predict['images_per_second']:.1f} images/s "
            f"over {predict['images']} (target >= 100); serial host work per image: teacher "
            f"pixels {1e3 * host['teacher_pixels']:.1f} ms, score {1e3 * host['score']:.1f} ms"
        )
    copies = figures["copies_to_host"]
    print(
        "to the host, ms per image, pageable / pinned (to_host): maps "
        f"{1e3 * copies['maps_pageable']:.2f} / {1e3 * copies['maps_pinned']:.2f}, features "
        f"{1e3 * copies['features_pageable']:.2f} / {1e3 * copies['features_pinned']:.2f}"
    )
    tiles = figures["tiles"]
    print(
        f"tiles, bf16, {tiles['image_hw'][0]} x {tiles['image_hw'][1]} image, "
        f"{tiles['windows']} windows of {tiles['tile_size']} px: "
        f"{1e3 * tiles['seconds_per_image']:.1f} ms per image "
        f"({tiles['megapixels_per_second']:.1f} MP/s), teacher "
        f"{1e3 * tiles['teacher_seconds_per_window']:.2f} ms per window "
        f"({100 * tiles['teacher_share_of_predict']:.0f} % of predict)"
    )
    train = figures["train_epoch_seconds"]
    print(
        f"one training epoch, {figures['train_images']} images: fp32 {train['fp32']:.2f} s, "
        f"bf16 {train['bf16']:.2f} s ({train['fp32'] / train['bf16']:.2f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--teacher", default="dinov2_vitb14_reg")
    parser.add_argument("--image-size", type=int, default=1036)
    parser.add_argument("--batches", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--predict-batches", type=int, default=20)
    parser.add_argument("--train-images", type=int, default=200)
    parser.add_argument(
        "--tiles-hw",
        type=image_hw,
        default=(1944, 2592),
        help="H,W of the tiles-mode image (default 5 MP)",
    )
    parser.add_argument(
        "--other-hw",
        type=image_hw,
        default=(1000, 1500),
        help="H,W of the second predict run's images (padded and resized to --image-size)",
    )
    parser.add_argument("--tile-size", type=int, default=518)
    parser.add_argument(
        "--json", type=Path, default=Path(os.environ.get("OUT", ".")) / "bench_gpu.json"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="ViT-S/14 at 56 px, batches 1-2, 1 repeat, 4 training images",
    )
    args = parser.parse_args()
    if args.quick:
        args.teacher, args.image_size, args.batches = "dinov2_vits14", 56, [2]
        args.warmup, args.repeats, args.predict_batches, args.train_images = 1, 1, 2, 4
        args.tiles_hw, args.tile_size, args.other_hw = (60, 90), 28, (40, 60)
    device = torch.device(args.device)
    torch.manual_seed(0)
    teacher = load_teacher(args.teacher, weights="random").to(device)
    flops = image_flops(teacher, args.image_size)
    square = (args.image_size, args.image_size)
    latency = bench_teacher(teacher, args, device)
    best_batch = min(latency["bf16"], key=lambda b: latency["bf16"][b])
    figures = {
        "machine": describe(device),
        "teacher_variant": args.teacher,
        "image_size": args.image_size,
        "teacher_gflop_per_image": flops / 1e9,
        "teacher_seconds_per_image": latency,
        "best_bf16": {"batch": best_batch, "seconds_per_image": latency["bf16"][best_batch]},
        "predict": bench_predict(teacher, best_batch, args, device, square),
        "predict_other_shape": bench_predict(teacher, best_batch, args, device, args.other_hw),
        "copies_to_host": bench_copies(teacher.embed_dim, best_batch, args, device),
        "tiles": bench_tiles(teacher, args, device),
        "train_images": args.train_images,
        "train_epoch_seconds": bench_training(teacher, args, device),
    }
    if device.type == "cuda":
        figures["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    print_table(figures, flops)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
