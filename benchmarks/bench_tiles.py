"""Tiles mode (native resolution) against pad mode, on this machine, in one run.

Parts (`--parts`, default all):
- `tiny`: a synthetic set (`l2bt make-synthetic`, `--size` px long side) benchmarked with
  the same random ViT-S/14 teacher and epochs, l2bt in pad mode at `--pad-size` and in
  tiles mode at native scale (T = `--tile-size`), through `l2bt benchmark` itself
  (`--methods l2bt,l2bt+tiles`): AUPRO@30 % and @5 % for q1 and all, per absolute area
  bin, inference time per image, and the ratio q1(tiles) / q1(pad).
- `magnetic`: the same on `--magnetic-category` of ../shared/data (magnetic_tile: images
  smaller than a window, so tiles mode edge-pads them to T × T at native scale).
- `spots`: resolution isolated from the teacher: flat, finely textured surfaces with one
  2–4 px dark spot each; after fitting on spotless surfaces, the distance from each map's
  maximum to its spot, in tiles mode and in pad mode.
- `cost`: teacher + post-processing seconds per megapixel in tiles mode for images of 1,
  2, 5 and 12 MP, and the tokens per second of one plain T × T batch in the same run; the
  share of predict time spent stitching, blending and smoothing.
- `memory`: peak memory (RSS high-water mark, and private RssAnon sampled every 10 ms)
  of `l2bt predict` (a subprocess) on a 1, 5 and 12 MP image in tiles mode, against the
  bound 6 × H·W·4 bytes; and of `l2bt fit` on 5 images of 1 MP and of 12 MP.

    .venv/bin/python benchmarks/bench_tiles.py                 # every part (long)
    .venv/bin/python benchmarks/bench_tiles.py --parts cost --quick
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from common import interleaved_medians, median_seconds
from l2bt import L2BT
from l2bt.anomaly_map import predict_images, smooth
from l2bt.config import L2BTConfig, TeacherConfig, TileSettings, TrainConfig
from l2bt.data.synthetic import SyntheticConfig, write_synthetic
from l2bt.preprocess import InputGeometry, teacher_inputs
from l2bt.tiling import frame_to_image, stitch

ROOT = Path(__file__).resolve().parents[1]
L2BT_CLI = [sys.executable, "-m", "l2bt"]


def textured(height: int, width: int, seed: int) -> np.ndarray:
    """A flat grey surface with fine noise, (H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    fine = ndimage.uniform_filter(rng.normal(0.0, 6.0, (height, width)), 2)
    return np.repeat(np.clip(128 + fine, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def run_cli(args: list[str], env: dict[str, str]) -> None:
    subprocess.run([*L2BT_CLI, *args], check=True, env=env, cwd=ROOT)


def part_tiny(args: argparse.Namespace, work: Path, env: dict[str, str]) -> dict:
    synthetic = SyntheticConfig(
        size=args.size, n_train=args.n_train, n_test_good=3, n_test_defective=args.n_test
    )
    write_synthetic(work / "data", synthetic)
    return pad_against_tiles(args, work / "data", "synthetic", work / "benchmark", env)


def part_magnetic(args: argparse.Namespace, work: Path, env: dict[str, str]) -> dict:
    """The real set: its images (about 200-600 px a side) are mostly smaller than a window."""
    data = ROOT.parent / "shared" / "data"
    return pad_against_tiles(args, data, args.magnetic_category, work / "benchmark", env)


def pad_against_tiles(
    args: argparse.Namespace, data: Path, category: str, out: Path, env: dict[str, str]
) -> dict:
    """`l2bt benchmark --methods l2bt,l2bt+tiles` on one category, and its figures."""
    run_cli(
        [
            "benchmark",
            "--data",
            str(data),
            "--categories",
            category,
            "--methods",
            "l2bt,l2bt+tiles",
            "--teacher",
            "dinov2_vits14",
            "--weights",
            "random",
            "--image-size",
            str(args.pad_size),
            "--tile-size",
            str(args.tile_size),
            "--epochs",
            str(args.epochs),
            "--calibration",
            "0",
            "--out",
            str(out),
        ],
        env,
    )
    results = {}
    for name in ("l2bt", "l2bt+tiles"):
        result = json.loads((out / "results" / name / f"{category}.json").read_text())
        results[name] = {
            "aupro@0.3": {b: result["aupro"]["0.3"][b] for b in ("q1", "all")},
            "aupro@0.05": {b: result["aupro"]["0.05"][b] for b in ("q1", "all")},
            "aupro_abs@0.3": result["aupro_abs"]["0.3"],
            "seconds_per_image": result["run"]["inference_seconds_per_image_median"],
            "size_quantiles_px": result["size_quantiles_px"],
        }
    pad, tiles = (results[n]["aupro@0.3"]["q1"] for n in ("l2bt", "l2bt+tiles"))
    results["q1_ratio_tiles_over_pad@0.3"] = None if not pad or tiles is None else tiles / pad
    return results


def fit_model(images: list[Path], mode: str, args: argparse.Namespace, cache: Path) -> L2BT:
    size = args.tile_size if mode == "tiles" else args.pad_size
    config = L2BTConfig(
        TeacherConfig(
            "dinov2_vits14",
            "random",
            size,
            input_mode=mode,
            tiles=TileSettings(size=args.tile_size),
        ),
        TrainConfig(epochs=args.epochs),
    )
    return L2BT.fit(images, config, device="cpu", cache_dir=cache)


def part_spots(args: argparse.Namespace, work: Path) -> dict:
    height, width = (args.size * 3) // 4, args.size
    train = []
    for i in range(args.n_train):
        path = work / f"train_{i}.png"
        Image.fromarray(textured(height, width, seed=i)).save(path)
        train.append(path)
    rng = np.random.default_rng(1)
    tests = []
    for i in range(args.n_test):
        image = textured(height, width, seed=1000 + i)
        y, x = int(rng.integers(40, height - 40)), int(rng.integers(40, width - 40))
        radius = float(rng.uniform(1.0, 2.0))  # 2-4 px across
        yy, xx = np.ogrid[:height, :width]
        image[(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] = 40
        tests.append((image, (y, x)))
    results = {}
    for mode in ("tiles", "pad"):
        model = fit_model(train, mode, args, work / "cache")
        distances = []
        for image, (y, x) in tests:
            anomaly_map = model.predict(image).anomaly_map
            top = np.unravel_index(int(np.argmax(anomaly_map)), anomaly_map.shape)
            distances.append(float(np.hypot(top[0] - y, top[1] - x)))
        results[mode] = {
            "distances_px": [round(d, 1) for d in distances],
            "within_one_patch": int(sum(d <= 14 for d in distances)),
            "n": len(distances),
        }
    return results


def part_cost(args: argparse.Namespace, work: Path) -> dict:
    model = fit_model(_one_image(work), "tiles", args, work / "cache")
    config = model.config.teacher
    tokens_per_window = (config.tile_size // 14) ** 2
    batch = torch.randn(min(16, args.batch), 3, config.tile_size, config.tile_size)
    plain = median_seconds(lambda: _score_all(model, batch), args.repeats)
    plain_rate = batch.shape[0] * tokens_per_window / plain
    rows = {}
    sizes = {"1 MP": (866, 1155), "2 MP": (1224, 1632), "5 MP": (1936, 2582), "12 MP": (3000, 4000)}
    for label, (height, width) in sizes.items():
        image = textured(height, width, 1)
        geometry = InputGeometry.of(config, height, width)
        layout = geometry.tiles
        assert layout is not None
        x = teacher_inputs(image, geometry)  # (n, 3, T, T)
        windows = torch.rand(geometry.n_inputs, config.tile_size, config.tile_size)
        seconds = interleaved_medians(
            {
                "predict": lambda image=image: predict_images(
                    model.patch_maps, [image], config, model.device
                ),
                "teacher": lambda x=x: _score_all(model, x),
                "stitch_smooth": lambda w=windows, t=layout: frame_to_image(
                    smooth(stitch(w, t)[None, None]), t
                ),
            },
            args.repeats,
        )
        megapixels = height * width / 1e6
        rows[label] = {
            "windows": geometry.n_inputs,
            "predict_s_per_mp": seconds["predict"] / megapixels,
            "teacher_s_per_mp": seconds["teacher"] / megapixels,
            "tokens_per_s_vs_plain_batch": (
                geometry.n_inputs * tokens_per_window / seconds["teacher"] / plain_rate
            ),
            "stitch_blend_smooth_share_of_predict": seconds["stitch_smooth"] / seconds["predict"],
        }
    per_mp = [row["predict_s_per_mp"] for row in rows.values()]
    return {
        "plain_batch_tokens_per_s": plain_rate,
        "sizes": rows,
        "predict_s_per_mp_max_over_min": max(per_mp) / min(per_mp),
    }


def _one_image(work: Path) -> list[Path]:
    work.mkdir(parents=True, exist_ok=True)
    path = work / "train.png"
    Image.fromarray(textured(600, 800, 5)).save(path)
    return [path]


@torch.inference_mode()
def _score_all(model: L2BT, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([model.patch_maps(x[i : i + 16]) for i in range(0, x.shape[0], 16)])


def peak_memory_mib(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """Peak memory of `command` in MiB, from /proc every 10 ms: `rss`, the kernel's
    high-water mark (VmHWM, with the pages of memory-mapped files such as the feature
    cache), and `anonymous`, the largest RssAnon seen (the process's own memory)."""
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    peaks = {"rss": 0, "anonymous": 0}
    fields = {"VmHWM:": "rss", "RssAnon:": "anonymous"}
    while process.poll() is None:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                name, *value = line.split()
                if name in fields:
                    peaks[fields[name]] = max(peaks[fields[name]], int(value[0]))
        time.sleep(0.01)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed")
    return {name: kib / 1024 for name, kib in peaks.items()}


MEMORY_SIZES = {"1 MP": (866, 1155), "5 MP": (1936, 2582), "12 MP": (3000, 4000)}


def part_memory(args: argparse.Namespace, work: Path, env: dict[str, str]) -> dict:
    """Peak memory of predict (one image) and of fit (5 images) per image size, and the
    issue's bound: predict at 12 MP ≤ predict at 1 MP + six 12 MP float32 maps."""
    model = fit_model(_one_image(work), "tiles", args, work / "cache")
    run = model.save(work / "run")
    results: dict = {"predict": {}, "fit": {}}
    for label, (height, width) in MEMORY_SIZES.items():
        name = label.replace(" ", "")
        image = work / f"{name}.png"
        Image.fromarray(textured(height, width, 2)).save(image)
        predict = [*L2BT_CLI, "predict", "--model", str(run), "--out", str(work / f"maps_{name}")]
        results["predict"][label] = {
            **peak_memory_mib([*predict, str(image)], env),
            "six_maps_mib": 6 * height * width * 4 / 2**20,
        }
        if label != "5 MP":
            data = _five_images(work / f"fit_{name}", height, width)
            results["fit"][label] = peak_memory_mib(
                _fit_command(data, work / f"run_{name}", args), env
            )
    small, large = results["predict"]["1 MP"], results["predict"]["12 MP"]
    for kind in ("rss", "anonymous"):
        results[f"predict_bound_met_{kind}"] = large[kind] <= small[kind] + large["six_maps_mib"]
    return results


def _five_images(root: Path, height: int, width: int) -> Path:
    """An MVTec-style data root with category `cat`: 5 training images, 1 test image."""
    (root / "cat/train/good").mkdir(parents=True)
    (root / "cat/test/good").mkdir(parents=True)
    for i in range(5):
        Image.fromarray(textured(height, width, 10 + i)).save(root / f"cat/train/good/{i}.png")
    Image.fromarray(textured(height, width, 20)).save(root / "cat/test/good/0.png")
    return root


def _fit_command(data: Path, out: Path, args: argparse.Namespace) -> list[str]:
    return [
        *L2BT_CLI,
        "fit",
        "--data",
        str(data),
        "--category",
        "cat",
        "--out",
        str(out),
        "--teacher",
        "dinov2_vits14",
        "--weights",
        "random",
        "--input-mode",
        "tiles",
        "--tile-size",
        str(args.tile_size),
        "--epochs",
        "1",
        "--calibration",
        "0",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="tiny,spots,cost,memory")
    parser.add_argument("--size", type=int, default=2048, help="synthetic images' long side")
    parser.add_argument("--pad-size", type=int, default=518)
    parser.add_argument("--tile-size", type=int, default=518)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=8)
    parser.add_argument("--n-test", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--magnetic-category", default="magnetic_tile")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.size, args.pad_size, args.tile_size, args.epochs = 512, 112, 112, 1
        args.n_train, args.n_test, args.repeats = 3, 3, 1
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {**os.environ, "L2BT_CACHE_DIR": str(work / "cache"), "L2BT_PROGRESS": "off"}
        for part in args.parts.split(","):
            (work / part).mkdir()
            tic = time.perf_counter()
            if part == "tiny":
                results[part] = part_tiny(args, work / part, env)
            elif part == "magnetic":
                results[part] = part_magnetic(args, work / part, env)
            elif part == "spots":
                results[part] = part_spots(args, work / part)
            elif part == "cost":
                results[part] = part_cost(args, work / part)
            elif part == "memory":
                results[part] = part_memory(args, work / part, env)
            results[part]["seconds"] = round(time.perf_counter() - tic, 1)
            print(json.dumps({part: results[part]}, indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
