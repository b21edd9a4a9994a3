"""Tiles-mode student training: image steps (4 windows a step) against patch batches.

Prints, in one run on one machine, on the same cached teacher windows:
1. the patch-batch sweep: patches per second of a few steps at each --sweep size, with
   a plain matmul of the same shapes (the students' 16 products per step, 2·N·D² FLOPs
   each, on random float32 operands) beside it: achieved GFLOP/s and their ratio;
2. epoch time before (`--batch-size` windows per step, the former tiles default) and
   after (`--patch-batch` patches per step) for `--epochs` epochs, from the same seed;
3. both loss curves per epoch (every patch seen once per epoch by both, so equal epochs
   are equal patches seen), and a plot of them in --out.
Images are synthetic textures of --size W×H (or the PNGs of --images-dir); random
teacher weights (the students' arithmetic is the same as a trained teacher's).

    .venv/bin/python benchmarks/bench_training.py --images 40 --epochs 3   # ~5 min, 2 cores
    .venv/bin/python benchmarks/bench_training.py --quick                  # a smoke run
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common import median_seconds
from l2bt.config import PATCH_BATCH, TeacherConfig, TileSettings, TrainConfig
from l2bt.features import TrainFeatures, cached_train_features
from l2bt.patch_batches import PatchBatches
from l2bt.students import cosine_loss
from l2bt.teacher import load_teacher
from l2bt.training import TrainingHistory, new_students, train_students
from l2bt.utils.allocator import bound_large_buffers

CPU = torch.device("cpu")


def synthetic_images(folder: Path, count: int, width: int, height: int) -> list[Path]:
    """`count` smooth random textures of width × height, as PNGs in `folder`."""
    paths = []
    yy, xx = np.mgrid[0:height, 0:width]
    for index in range(count):
        rng = np.random.default_rng(index)
        gray = 128 + 60 * np.sin(xx / 9.0 + rng.random() * 6) * np.cos(yy / 13.0)
        gray = np.clip(gray + rng.normal(0, 8, gray.shape), 0, 255).astype(np.uint8)
        paths.append(folder / f"{index:03d}.png")
        Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2)).save(paths[-1])
    return paths


def steps_seconds(features: TrainFeatures, batch: int, steps: int) -> float:
    """Median seconds of one fp32 patch-batch step (read, forward, backward, Adam)."""
    forward, backward = new_students(features.dim, 0)
    optimizer = torch.optim.Adam([*forward.parameters(), *backward.parameters()], lr=1e-4)
    batches = PatchBatches(features.n_patches, batch)
    draws = itertools.cycle(batches.epoch(np.random.default_rng(0)))

    def step() -> None:
        blocks = next(draws)
        early, late = (
            torch.from_numpy(batches.gather(a, blocks)).float()
            for a in (features.early, features.late)
        )
        optimizer.zero_grad(set_to_none=True)
        (cosine_loss(forward(early), late) + cosine_loss(backward(late), early)).backward()
        optimizer.step()

    return median_seconds(step, repeats=steps)


def matmul_seconds(patches: int, dim: int, steps: int) -> float:
    """Median seconds of the 16 products of a step of `patches` rows, plain matmuls."""
    rows, weight = torch.randn(patches, dim), torch.randn(dim, dim)

    def products() -> None:
        for _ in range(2):  # two students
            for _ in range(5):  # 3 forward, 2 input gradients: (N, D) @ (D, D)
                rows.mm(weight)
            for _ in range(3):  # weight gradients: (D, N) @ (N, D)
                rows.t().mm(rows)

    return median_seconds(products, repeats=steps)


def sweep(features: TrainFeatures, sizes: list[int], steps: int) -> None:
    print("patches/step  patches/s  students GFLOP/s  matmul GFLOP/s  ratio")
    for size in sizes:
        flops = 32 * size * features.dim**2  # 16 products of 2·N·D² FLOPs
        students = flops / steps_seconds(features, size, steps) / 1e9
        plain = flops / matmul_seconds(size, features.dim, steps) / 1e9
        rate = students * 1e9 / (32 * features.dim**2)
        print(f"{size:12d}  {rate:9.0f}  {students:15.1f}  {plain:14.1f}  {students / plain:5.2f}")


def compare(features: TrainFeatures, args: argparse.Namespace) -> dict[str, TrainingHistory]:
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size)
    runs = {
        f"image steps ({args.batch_size} windows)": 0,
        f"patch batches ({args.patch_batch})": args.patch_batch,
    }
    histories = {}
    for name, patch_batch in runs.items():
        *_, histories[name] = train_students(features, config, CPU, patch_batch=patch_batch)
        history = histories[name]
        per_epoch = history.seconds / args.epochs
        losses = " ".join(f"{loss:.4f}" for loss in history.epoch_losses)
        print(f"{name}: {per_epoch:.1f} s per epoch; loss per epoch {losses}")
    return histories


def plot(histories: dict[str, TrainingHistory], path: Path) -> None:
    from l2bt.utils.figures import plt, save_figure

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, history in histories.items():
        epochs = range(1, len(history.epoch_losses) + 1)
        ax.plot(epochs, history.epoch_losses, marker="o", label=name)
    ax.set_xlabel("epoch (every patch once)")
    ax.set_ylabel("loss (forward + backward)")
    ax.set_title("tiles-mode student training")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)
    print(f"wrote {path}")


def cached_windows(args: argparse.Namespace, scratch: Path) -> TrainFeatures:
    if args.images_dir:
        images = sorted(Path(args.images_dir).glob("*.png"))[: args.images]
    else:
        width, height = (int(v) for v in args.size.split("x"))
        images = synthetic_images(scratch, args.images, width, height)
    tiles = TileSettings(args.tile_size)
    config = TeacherConfig(args.teacher, "random", input_mode="tiles", tiles=tiles)
    teacher = load_teacher(args.teacher, "random")
    features = cached_train_features(teacher, images, config, CPU, cache_dir=scratch / "cache")
    print(
        f"{len(images)} images, {len(features)} windows of {args.tile_size} px, "
        f"{features.n_patches} patches of D = {features.dim}; {torch.get_num_threads()} threads"
    )
    return features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--images-dir", default=None, help="PNGs to use instead")
    parser.add_argument("--size", default="1540x645", help="synthetic images, WxH")
    parser.add_argument("--teacher", default="dinov2_vits14")
    parser.add_argument("--tile-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4, help="windows per image step")
    parser.add_argument("--patch-batch", type=int, default=PATCH_BATCH)
    parser.add_argument("--sweep", default="512,1024,2048,4096,8192,16384")
    parser.add_argument("--sweep-steps", type=int, default=8)
    parser.add_argument("--out", default="runs/bench_training")
    parser.add_argument("--quick", action="store_true", help="4 small images, 1 epoch")
    args = parser.parse_args()
    if args.quick:
        args.images, args.size, args.epochs, args.sweep_steps = 4, "500x300", 1, 2
        args.sweep = "1024,4096"
    bound_large_buffers()  # as the command line runs
    with tempfile.TemporaryDirectory() as scratch:
        features = cached_windows(args, Path(scratch))
        sweep(features, [int(v) for v in args.sweep.split(",")], args.sweep_steps)
        histories = compare(features, args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    plot(histories, Path(args.out) / "training_loss.png")


if __name__ == "__main__":
    main()
