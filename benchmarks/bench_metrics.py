"""Exact streaming evaluation against the published protocol: time and peak memory.

Synthesises N anomaly maps of H×W with realistic ground truth (every other image
defect-free; 1–4 elliptic regions per defective image, areas log-uniform from ~10 px to
~50,000 px; smooth maps with higher scores on defects) and writes them as `l2bt predict`
does, in an MVTec AD tree: float32 TIFF maps, PNG masks, PNG images (for their size).
Then, each in a fresh process, one after the other:

- floor: read and decode every map and every mask once, one after the other, nothing
  else — what any evaluator of these files must at least spend;
- ours: `l2bt.maps.evaluate.evaluate_maps`, exactly what `l2bt evaluate` runs (reader and
  counting threads, every figure of SPEC §6 and the further ones, exact);
- published: a plain implementation of the paper's protocol on the same files: every
  map and mask kept in Python lists, 99 thresholds evenly spaced over the score range,
  components relabelled for every size bin, FPR and PRO counted threshold by threshold;
- start-up: fresh `python -m l2bt evaluate …` processes, from the moment each is
  spawned to its first read of a map's pixels (a hook on tifffile in the child), and
  fresh `python -m l2bt --help` processes, spawn to exit;
- with `--previous SRC` (the `src` folder of another checkout, e.g. made with
  `git worktree add /tmp/before 33c11f9`): that version's `evaluate_maps` on the same
  files, each run in a fresh process, and its start-up times, for a before/after in one run.

Time is wall-clock from the first file read to the result; peak memory is both the
process's peak RSS above its RSS before evaluating (ru_maxrss). No tracemalloc: tracing
every allocation slows the evaluator's threads (measured: 11.1 s instead of 6.5 s on the
200 maps) and would bias the comparison. Floor, ours and the previous version run in turn
within each repeat, so that a slow spell of the machine hits all three.

    .venv/bin/python benchmarks/bench_metrics.py             # 200 maps of 1000x1500
    .venv/bin/python benchmarks/bench_metrics.py --n-maps 20 --published-repeats 0  # quick
    .venv/bin/python benchmarks/bench_metrics.py --visa      # ours alone: 2,000 maps of
                                                             # 1000x1500, in memory
    .venv/bin/python benchmarks/bench_metrics.py --visa --visa-maps 200   # quick

`--visa` drives `StreamingEvaluator` directly (2,000 files of 6 MB would need 12 GB of
disk): 64 synthetic pairs are made first, outside the measurement, and map i is pair
i mod 64 plus 10⁻⁴·i (so that scores differ between images), made as it is consumed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from l2bt.maps.layout import MapsFolder, write_map
from l2bt.metrics import FPR_LIMITS, SIZE_BINS

CATEGORY = "bench"
VISA_BASES = 64

# ---- synthetic data -------------------------------------------------------------------------


def synthetic_pair(index: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """An (H, W) float32 map and bool mask, deterministic by index; odd indices have defects."""
    rng = np.random.default_rng(index)
    coarse = rng.standard_normal((height // 16 + 2, width // 16 + 2), dtype=np.float32)
    anomaly_map = ndimage.zoom(coarse, 16, order=1)[:height, :width]  # smooth background
    anomaly_map += 0.3 * rng.standard_normal((height, width), dtype=np.float32)
    mask = np.zeros((height, width), bool)
    if index % 2:
        for _ in range(rng.integers(1, 5)):
            region = _ellipse(rng, height, width)
            mask[region] = True
            anomaly_map[region] += rng.uniform(0.5, 3.0)
    return anomaly_map, mask


def _ellipse(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel indices (rows, cols) of a random ellipse of log-uniform area in [10, 50,000]."""
    area = np.exp(rng.uniform(np.log(10), np.log(50_000)))
    ry = np.sqrt(area / np.pi) * rng.uniform(0.5, 2.0)
    rx = area / np.pi / ry
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    y0, y1 = max(int(cy - ry), 0), min(int(cy + ry) + 2, height)
    x0, x1 = max(int(cx - rx), 0), min(int(cx + rx) + 2, width)
    yy, xx = np.ogrid[y0:y1, x0:x1]  # the bounding box only
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0  # (box H, box W)
    rows, cols = np.nonzero(inside)
    return rows + y0, cols + x0


def write_tree(root: Path, n: int, height: int, width: int) -> tuple[Path, Path]:
    """An MVTec AD tree (data) and its maps, as `l2bt predict` writes them."""
    data, maps = root / "data", root / "maps"
    base = data / CATEGORY
    gray = Image.fromarray(np.full((height, width), 128, np.uint8))
    for folder in ("train/good", "test/good", "test/defect", "ground_truth/defect"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    gray.save(base / "train/good/000.png")
    for i in range(n):
        anomaly_map, mask = synthetic_pair(i, height, width)
        key = f"test/{'defect' if i % 2 else 'good'}/{i:05d}"
        gray.save(base / f"{key}.png")
        if i % 2:
            Image.fromarray(mask.astype(np.uint8) * 255).save(
                base / "ground_truth/defect" / f"{i:05d}_mask.png"
            )
        write_map(MapsFolder(maps / CATEGORY).map(key), anomaly_map)
    return data, maps


# ---- the evaluations --------------------------------------------------------------------------


def floor(data: Path, maps: Path) -> dict[str, float | None]:
    """Read and decode every map and mask once, plainly."""
    from l2bt.data import load_category
    from l2bt.maps.evaluate import sample_mask
    from l2bt.maps.layout import MapsFolder, read_map

    split = load_category(data, CATEGORY)
    for s in split.evaluable_test:
        anomaly_map = read_map(MapsFolder(maps / CATEGORY).map(s.key))
        sample_mask(s, anomaly_map.shape)
    return {}


def ours(data: Path, maps: Path) -> dict[str, float | None]:
    """`l2bt evaluate`'s own code path."""
    from l2bt.data import load_category
    from l2bt.maps.evaluate import evaluate_maps
    from l2bt.utils.allocator import bound_large_buffers

    bound_large_buffers()  # as `l2bt` does for every verb
    result = evaluate_maps(load_category(data, CATEGORY), maps)
    return {
        f"{limit}/{name}": result.aupro[limit][name] for limit in FPR_LIMITS for name in SIZE_BINS
    }


def published(data: Path, maps: Path) -> dict[str, float | None]:
    """The published protocol, plainly: lists, 99 thresholds, components relabelled per bin."""
    from l2bt.data import load_category
    from l2bt.maps.evaluate import sample_mask
    from l2bt.maps.layout import MapsFolder, read_map

    split = load_category(data, CATEGORY)
    folder = MapsFolder(maps / CATEGORY)
    all_maps = [read_map(folder.map(s.key)) for s in split.evaluable_test]
    masks = [sample_mask(s, m.shape) for s, m in zip(split.evaluable_test, all_maps, strict=True)]
    areas = []
    for mask in masks:
        labels = ndimage.label(mask, structure=np.ones((3, 3)))[0]
        areas += np.bincount(labels.ravel())[1:].tolist()
    q1, q2, q3 = np.quantile(areas, [0.25, 0.5, 0.75])
    high = max(float(m.max()) for m in all_maps)
    low = min(float(m.min()) for m in all_maps)
    thresholds = np.linspace(high, low, 99)  # descending: FPR ascends
    out = {}
    for name, max_area in {"q1": q1, "q2": q2, "q3": q3, "all": np.inf}.items():
        fpr, pro = _published_curve(all_maps, masks, max_area, thresholds)
        for limit in FPR_LIMITS:
            keep = fpr <= limit
            x = np.append(fpr[keep], limit)
            y = np.append(pro[keep], np.interp(limit, fpr, pro))
            out[f"{limit}/{name}"] = float(np.trapezoid(y, x) / limit)
    return out


def _published_curve(maps, masks, max_area, thresholds) -> tuple[np.ndarray, np.ndarray]:
    """FPR and PRO at each threshold for the regions of area ≤ max_area, from (0, 0)."""
    regions = []  # (image index, flat pixel indices) of every region in the bin
    for i, mask in enumerate(masks):
        labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
        for r in range(1, count + 1):
            pixels = np.flatnonzero(labels == r)
            if pixels.size <= max_area:
                regions.append((i, pixels))
    negatives = sum(int((~mask).sum()) for mask in masks)
    fprs, pros = [0.0], [0.0]
    for t in thresholds:
        false_positives = 0
        overlaps = []
        for anomaly_map, mask in zip(maps, masks, strict=True):
            false_positives += int(((anomaly_map >= t) & ~mask).sum())
        for i, pixels in regions:
            overlaps.append(float((maps[i].ravel()[pixels] >= t).mean()))
        fprs.append(false_positives / negatives)
        pros.append(float(np.mean(overlaps)))
    return np.array(fprs), np.array(pros)


def visa(n: int, height: int, width: int) -> dict[str, float | None]:
    """`StreamingEvaluator` as `evaluate_maps` drives it, on n in-memory maps (see the
    module docstring); the bases are made before the measurement starts."""
    from l2bt.metrics import StreamingEvaluator, default_workers

    bases = _VISA_BASES
    evaluator = StreamingEvaluator(n_images=n, workers=default_workers())
    for i in range(1, n, 2):
        anomaly_map, mask = bases[i % VISA_BASES]
        evaluator.add_defect_scores(mask, anomaly_map[mask] + np.float32(1e-4 * i), key=str(i))
    for i in range(n):
        anomaly_map, mask = bases[i % VISA_BASES]
        evaluator.add(anomaly_map + np.float32(1e-4 * i), mask)
    result = evaluator.result()
    return {"aupro 0.3/all": result.aupro[0.3]["all"], "aupimo": result.aupimo.mean}


_VISA_BASES: list[tuple[np.ndarray, np.ndarray]] = []
EVALUATIONS = {"floor": floor, "ours": ours, "published": published}


# ---- measuring, each evaluation in a fresh process ----------------------------------------------


def measured(name: str, args: tuple, queue) -> None:
    """One evaluation in this (fresh) process: its time and peak RSS increase."""
    if name == "visa":
        _VISA_BASES.extend(synthetic_pair(i, *args[1:]) for i in range(VISA_BASES))
    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    tic = time.perf_counter()
    values = visa(*args) if name == "visa" else EVALUATIONS[name](*args)
    seconds = time.perf_counter() - tic
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start_rss
    queue.put({"seconds": seconds, "rss_mib": peak / 1024, "values": values})


def run(name: str, *args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=measured, args=(name, args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


STARTUP_CHILD = r"""
import os, sys, time
import tifffile

def first_read(*args, **kwargs):
    delay = time.time() - float(os.environ["BENCH_SPAWNED"])
    os.write(1, f"FIRST-READ {delay:.4f}\n".encode())  # one write: whole lines from threads
    os._exit(0)

tifffile.memmap = tifffile.imread = first_read
import runpy
sys.argv = ["l2bt", *sys.argv[1:]]
runpy.run_module("l2bt", run_name="__main__")
"""


PREVIOUS_CHILD = r"""
import json, resource, sys, time
from l2bt.data import load_category
try:
    from l2bt.maps.evaluate import evaluate_maps
except ImportError:  # a checkout from before the maps package
    from l2bt.evaluation import evaluate_maps
data, maps, category = sys.argv[1:]
split = load_category(data, category)
start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tic = time.perf_counter()
evaluate_maps(split, maps)
seconds = time.perf_counter() - tic
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start_rss
print(json.dumps({"seconds": seconds, "rss_mib": peak / 1024}))
"""


def with_source(src: Path | None) -> dict[str, str]:
    """The environment of a child that imports l2bt from `src` (None: this checkout)."""
    if src is None:
        return dict(os.environ)
    return {**os.environ, "PYTHONPATH": str(Path(src).resolve())}


def previous(src: Path, data: Path, maps: Path) -> dict:
    """Another checkout's `evaluate_maps` on the same files, in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", PREVIOUS_CHILD, str(data), str(maps), CATEGORY],
        capture_output=True,
        text=True,
        env=with_source(src),
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"the previous version failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def help_startup(repeats: int, src: Path | None = None) -> list[float]:
    """Seconds from spawning `python -m l2bt --help` to its exit."""
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "l2bt", "--help"],
            capture_output=True,
            env=with_source(src),
            check=True,
        )
        times.append(time.perf_counter() - tic)
    return times


def startup(data: Path, maps: Path, repeats: int, src: Path | None = None) -> list[float]:
    """Seconds from spawning `python -m l2bt evaluate …` to its first read of map pixels."""
    delays = []
    for _ in range(repeats):
        env = {**with_source(src), "BENCH_SPAWNED": repr(time.time())}
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                STARTUP_CHILD,
                "evaluate",
                "--data",
                str(data),
                "--category",
                CATEGORY,
                "--maps",
                str(maps),
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        line = [x for x in done.stdout.splitlines() if x.startswith("FIRST-READ")]
        if not line:
            raise RuntimeError(f"no map read: {done.stderr[-2000:]}")
        delays.append(float(line[0].split()[1]))
    return delays


def report(label: str, runs: list[dict]) -> dict[str, float]:
    med = {key: statistics.median(r[key] for r in runs) for key in ("seconds", "rss_mib")}
    each = ", ".join(f"{r['seconds']:.1f}" for r in runs)
    spread = f" (runs: {each} s)"
    print(
        f"  {label:<28}{med['seconds']:8.2f} s   peak RSS +{med['rss_mib']:6.0f} MiB"
        + (spread if len(runs) > 1 else "")
    )
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-maps", type=int, default=200)
    parser.add_argument("--size", default="1000x1500", help="H x W of every map")
    parser.add_argument("--repeats", type=int, default=3, help="runs of ours and the floor")
    parser.add_argument(
        "--published-repeats",
        type=int,
        default=1,
        help="runs of the published protocol (minutes each; 0: skip it)",
    )
    parser.add_argument(
        "--startup-repeats",
        type=int,
        default=5,
        help="fresh processes timed to their first map read (median)",
    )
    parser.add_argument(
        "--visa", action="store_true", help="ours only, --visa-maps maps of 1000x1500 in memory"
    )
    parser.add_argument("--visa-maps", type=int, default=2000)
    parser.add_argument(
        "--previous",
        type=Path,
        default=None,
        metavar="SRC",
        help="also time the l2bt in this src folder (another checkout)",
    )
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    if args.visa:
        n = args.visa_maps
        r = run("visa", n, height, width)
        print(
            f"VisA-sized: {n:,} maps of {height}x{width} ({n * height * width / 1e9:.1f} G "
            f"pixels), in memory: {r['seconds']:.1f} s evaluating; peak RSS "
            f"+{r['rss_mib']:.0f} MiB"
        )
        _write_json(args.json, {"visa": r})
        return
    with tempfile.TemporaryDirectory() as tmp:
        data, maps = write_tree(Path(tmp), args.n_maps, height, width)
        floors, mine, before = [], [], []
        for _ in range(args.repeats):  # in turn: a slow spell of the machine hits all three
            floors.append(run("floor", data, maps))
            mine.append(run("ours", data, maps))
            if args.previous:
                before.append(previous(args.previous, data, maps))
        theirs = [run("published", data, maps) for _ in range(args.published_repeats)]
        n = args.startup_repeats
        delays = {"evaluate": startup(data, maps, n), "help": help_startup(n)}
        if args.previous:
            delays |= {
                "evaluate_previous": startup(data, maps, n, args.previous),
                "help_previous": help_startup(n, args.previous),
            }
    print(f"{args.n_maps} maps of {height}x{width} (TIFF maps, PNG masks), medians:")
    f = report("floor (read + decode once)", floors)
    a = report("ours (exact, streaming)", mine)
    print(f"  ours / floor: {a['seconds'] / f['seconds']:.2f}x the time to read the files")
    if before:
        p = report("previous version", before)
        print(f"  ours against the previous version: {p['seconds'] / a['seconds']:.2f}x faster")
    for name, times in delays.items():
        if times:
            print(
                f"  start-up, {name}: {statistics.median(times):.3f} s "
                f"(median of {len(times)}: {', '.join(f'{d:.3f}' for d in times)})"
            )
    figures = {
        "floor": floors,
        "ours": mine,
        "published": theirs,
        "previous": before,
        "startup_s": delays,
    }
    if theirs:
        b = report("published (99 thr.)", theirs)
        print(
            f"  speed-up {b['seconds'] / a['seconds']:.1f}x; peak RSS "
            f"{a['rss_mib'] / b['rss_mib']:.3f} of the published protocol's"
        )
        gap = max(abs(mine[0]["values"][k] - theirs[0]["values"][k]) for k in mine[0]["values"])
        print(f"  largest AUPRO difference, 99 thresholds vs exact: {gap:.4f}")
    _write_json(args.json, figures)


def _write_json(path: str | None, figures: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
