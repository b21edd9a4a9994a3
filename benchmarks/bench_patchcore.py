"""PatchCore's two kernels, ours against the straightforward version, in one run.

- Coreset selection (k-center greedy on N × 128 projected points): ours keeps the squared
  norms and works in place (one matrix–vector product per pick, no (N, d) temporary)
  against a version that computes ‖x − c‖² from scratch every pick (as the first
  implementation did: an (N, d) temporary and all N norms per pick).
- Nearest-neighbour scoring of one 1036 px image (5,476 queries of 1,536 dims) against a
  bank: ours (blocked matmul, cached bank norms, direct distance of the winner) against
  `torch.cdist(...).min(1)`.

Reports the median seconds per pick / per image, the ratio, and extrapolates selection
to the full-resolution banks of the benchmark. Peak memory: RSS increase, sampled.

    .venv/bin/python benchmarks/bench_patchcore.py                 # N = 500k, bank 20k
    .venv/bin/python benchmarks/bench_patchcore.py --n 300000 --picks 100 --bank 10000 --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

import torch

from l2bt.methods.coreset import greedy_coreset
from l2bt.methods.nearest import nearest_distances, squared_norms


def naive_greedy(points: torch.Tensor, size: int) -> torch.Tensor:
    """k-center greedy recomputing every squared distance from the points each pick."""
    nearest = torch.full((points.shape[0],), float("inf"))
    chosen = [0]
    for _ in range(size):
        centre = points[chosen[-1]]
        fresh = (points.square().sum(1) + centre.square().sum() - 2.0 * points @ centre)
        nearest = torch.minimum(nearest, fresh.clamp(min=0))
        chosen.append(int(nearest.argmax()))
    return torch.tensor(chosen)


def rss_bytes() -> int:
    """Resident memory of this process now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed(function, repeats: int) -> tuple[float, float]:
    """Median seconds of `repeats` calls and the peak RSS increase (MiB) over all of them,
    sampled every 5 ms by a thread."""
    seconds, before, peak = [], rss_bytes(), [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for _ in range(repeats):
        tic = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - tic)
    done.set()
    sampler.join()
    return statistics.median(seconds), (max(peak[0], rss_bytes()) - before) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500_000, help="patches in the selection")
    parser.add_argument("--picks", type=int, default=200, help="picks timed per repeat")
    parser.add_argument("--bank", type=int, default=20_000, help="bank rows for scoring")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's; 1 is steadier on a busy machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    points = torch.randn(args.n, 128)
    ours, ours_mem = timed(lambda: greedy_coreset(points, args.picks), args.repeats)
    naive, naive_mem = timed(lambda: naive_greedy(points, args.picks), args.repeats)
    per_pick = ours / args.picks
    print(f"\ncoreset, N = {args.n:,} x 128, {args.picks} picks")
    print(f"  ours   {1e3 * per_pick:8.3f} ms/pick   peak +{ours_mem:7.1f} MiB")
    print(f"  naive  {1e3 * naive / args.picks:8.3f} ms/pick   peak +{naive_mem:7.1f} MiB")
    print(f"  speed-up {naive / ours:.2f}x")
    print("  extrapolated (time linear in N per pick, ratio 0.1):")
    for images in (209, 391, 761):  # bottle, MVTec's largest train set, a large VisA one
        n = images * 74 * 74
        hours = 0.1 * n * per_pick * n / args.n / 3600
        print(f"    {images} images x 5,476 patches = {n / 1e6:.2f} M: {hours:7.2f} h")

    queries = torch.randn(74 * 74, 1536)
    bank = torch.randn(args.bank, 1536)
    norms = squared_norms(bank)
    ours, ours_mem = timed(lambda: nearest_distances(queries, bank, norms), args.repeats)
    cdist, cdist_mem = timed(lambda: torch.cdist(queries, bank).min(dim=1).values, args.repeats)
    flops = 2 * queries.shape[0] * args.bank * 1536
    print(f"\nnearest neighbours, 5,476 queries x bank {args.bank:,} x 1,536")
    print(f"  ours   {ours:7.3f} s/img  {flops / ours / 1e9:6.1f} GFLOP/s  "
          f"peak +{ours_mem:7.1f} MiB")
    print(f"  cdist  {cdist:7.3f} s/img  {flops / cdist / 1e9:6.1f} GFLOP/s  "
          f"peak +{cdist_mem:7.1f} MiB")
    print(f"  speed-up {cdist / ours:.2f}x")
    per_row = ours / args.bank
    for images in (209, 761):
        rows = round(0.1 * images * 74 * 74)
        print(f"    bank of {images} images at ratio 0.1 ({rows:,} rows): "
              f"{per_row * rows:6.1f} s/img")


if __name__ == "__main__":
    main()
