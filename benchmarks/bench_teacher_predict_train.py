"""Where predict and fit spend their time, measured against this machine's floor.

Prints, in one run on one machine:
1. the teacher's achieved GFLOP/s at the benchmark size (FLOPs counted analytically)
   beside a plain fp32 matmul rate of the same inner dimensions;
2. predict latency per image split into teacher / students / post-processing;
3. fitting with the on-disk feature cache against re-extracting teacher features every
   epoch, measured over a few epochs and extrapolated to `--full-epochs`.

Random weights: timing does not depend on the weights' values.

    .venv/bin/python benchmarks/bench_teacher_predict_train.py            # 1036 px, ViT-B/14-reg
    .venv/bin/python benchmarks/bench_teacher_predict_train.py --quick    # 518 px, a smoke run
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common import median_seconds, teacher_flops
from l2bt.anomaly_map import image_score, patch_anomaly, to_image_maps
from l2bt.config import TeacherConfig, TrainConfig
from l2bt.features import cached_train_features
from l2bt.preprocess import preprocess
from l2bt.students import cosine_loss
from l2bt.teacher import load_teacher
from l2bt.training import new_students, train_students


def matmul_gflops(n: int, dim: int, repeats: int) -> float:
    a, b = torch.randn(n, dim), torch.randn(dim, 4 * dim)
    seconds = median_seconds(lambda: a @ b, repeats)
    return 2 * n * dim * 4 * dim / seconds / 1e9


def make_image(height: int, width: int, path: Path | None = None) -> np.ndarray:
    rng = np.random.default_rng(height * width)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if path is not None:
        Image.fromarray(image).save(path)
    return image


def reextraction_epoch(teacher, images, config, students, optimizer) -> None:
    """One epoch of the naive schedule: teacher features recomputed for every batch."""
    forward, backward = students
    for start in range(0, len(images), 4):
        x = torch.stack([preprocess(im, config.image_size)[0] for im in images[start : start + 4]])
        early, late = teacher.features(x, config.layers)
        early, late = early.flatten(0, 2), late.flatten(0, 2)  # (B, h, w, D) -> (B·h·w, D)
        loss = cosine_loss(forward(early), late) + cosine_loss(backward(late), early)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="dinov2_vitb14_reg")
    parser.add_argument("--image-size", type=int, default=1036)
    parser.add_argument("--image-hw", default="1000x1500", help="predict image H x W")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-images", type=int, default=4)
    parser.add_argument("--train-epochs", type=int, default=2)
    parser.add_argument("--full-epochs", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="518 px, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.image_size, args.repeats = 518, 1
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.teacher} (random weights), input {args.image_size} px"
    )

    teacher = load_teacher(args.teacher, weights="random")
    config = TeacherConfig(args.teacher, "random", args.image_size)
    grid = args.image_size // 14
    n_patches = grid * grid
    n_tokens = n_patches + 1 + teacher.num_register_tokens
    dim = teacher.embed_dim
    blocks = max(config.layers) + 1

    # 1. Teacher rate against a plain matmul of the same shapes, one image per batch.
    height, width = (int(v) for v in args.image_hw.split("x"))
    image = make_image(height, width)
    x, geometry = preprocess(image, args.image_size)
    x = x[None]  # (3, S, S) -> (1, 3, S, S)
    t_teacher = median_seconds(lambda: teacher.features(x, config.layers), args.repeats)
    flops = teacher_flops(n_tokens, dim, blocks, n_patches)
    rate = flops / t_teacher / 1e9
    mm_rate = matmul_gflops(n_tokens, dim, args.repeats)
    print(
        f"\n[teacher] {flops / 1e9:.0f} GFLOP per image in {t_teacher:.2f} s"
        f" = {rate:.1f} GFLOP/s;"
        f" plain fp32 matmul ({n_tokens}x{dim} @ {dim}x{4 * dim}) {mm_rate:.1f} GFLOP/s;"
        f" ratio {rate / mm_rate:.2f}"
    )

    # 2. Predict latency split.
    early, late = teacher.features(x, config.layers)
    forward, backward = new_students(dim, seed=0)

    def students_step():
        with torch.inference_mode():
            return patch_anomaly(forward, backward, early, late)

    patch_maps = students_step()
    t_students = median_seconds(students_step, args.repeats)
    t_post = median_seconds(
        lambda: image_score(to_image_maps(patch_maps, geometry)[0]), args.repeats
    )
    t_pre = median_seconds(lambda: preprocess(image, args.image_size), args.repeats)
    total = t_pre + t_teacher + t_students + t_post
    print(f"\n[predict {height}x{width} image, medians of {args.repeats}] total {total:.2f} s")
    for name, t in (
        ("preprocess", t_pre),
        ("teacher", t_teacher),
        ("students", t_students),
        ("post-processing", t_post),
    ):
        print(f"  {name:16s} {t:8.3f} s  {100 * t / total:5.1f} %")

    # 3. Training: cache vs re-extraction.
    n, epochs = args.train_images, args.train_epochs
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(n):
            paths.append(Path(tmp) / f"{i}.png")
            make_image(height + 7 * i, width, paths[-1])
        tic = time.perf_counter()
        features = cached_train_features(
            teacher,
            paths,
            config,
            torch.device("cpu"),
            cache_dir=Path(tmp) / "cache",
        )
        t_extract = time.perf_counter() - tic
        tic = time.perf_counter()
        train_students(features, TrainConfig(epochs=epochs), torch.device("cpu"))
        t_cached_epoch = (time.perf_counter() - tic) / epochs
        images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
        students = new_students(dim, seed=0)
        optimizer = torch.optim.Adam([*students[0].parameters(), *students[1].parameters()])
        tic = time.perf_counter()
        for _ in range(epochs):
            reextraction_epoch(teacher, images, config, students, optimizer)
        t_naive_epoch = (time.perf_counter() - tic) / epochs
    cached = t_extract + args.full_epochs * t_cached_epoch
    naive = args.full_epochs * t_naive_epoch
    print(f"\n[fit, {n} images, measured over {epochs} epochs]")
    print(f"  cached:       extraction {t_extract:.1f} s once + {t_cached_epoch:.2f} s/epoch")
    print(f"  re-extraction: {t_naive_epoch:.1f} s/epoch")
    print(
        f"  over {args.full_epochs} epochs: cached {cached:.0f} s, re-extraction {naive:.0f} s,"
        f" speed-up {naive / cached:.1f}x"
    )


if __name__ == "__main__":
    main()
