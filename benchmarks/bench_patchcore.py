"""PatchCore's two kernels, ours against the straightforward version, in one run.

- Coreset selection (k-center greedy on N × 128 projected points, as PatchCore runs it:
  rounded to 8-bit codes): `greedy_coreset` (certified runs of picks, the int8 codes
  read once per run by a blocked matrix product) against `greedy_coreset_reference`
  (one float32 matrix–vector product per pick, the previous implementation) on the same
  codes, alternating, with a check that both pick the same indices; with `--naive`, also a
  version that computes ‖x − c‖² from scratch every pick (an (N, d) temporary and all N
  norms per pick, as the first implementation did). Points: Gaussian, or `--points
  clustered` (a mixture of tight clusters, closer to image patches, where many are near
  duplicates).
- Nearest-neighbour scoring of one 1036 px image (5,476 queries of 1,536 dims) against a
  bank: ours (blocked matmul, cached bank norms, direct distance of the winner) against
  `torch.cdist(...).min(1)`.

Reports the median seconds per pick / per image, the ratio, and extrapolates selection
to the full-resolution banks of the benchmark. Peak memory: RSS increase, sampled.

    .venv/bin/python benchmarks/bench_patchcore.py                 # N = 500k, bank 20k
    .venv/bin/python benchmarks/bench_patchcore.py --n 300000 --picks 500 --bank 10000 --threads 1
"""

from __future__ import annotations

import argparse

import torch

from common import interleaved_with_peak_rss
from l2bt.methods.coreset import code_scale, greedy_coreset, greedy_coreset_reference, quantize
from l2bt.methods.nearest import nearest_distances, squared_norms


def naive_greedy(points: torch.Tensor, size: int) -> torch.Tensor:
    """k-center greedy recomputing every squared distance from the points each pick."""
    nearest = torch.full((points.shape[0],), float("inf"))
    chosen = [0]
    for _ in range(size):
        centre = points[chosen[-1]]
        fresh = points.square().sum(1) + centre.square().sum() - 2.0 * points @ centre
        nearest = torch.minimum(nearest, fresh.clamp(min=0))
        chosen.append(int(nearest.argmax()))
    return torch.tensor(chosen)


def timed(function, repeats: int) -> tuple[float, float]:
    """Median seconds of `repeats` calls and the peak RSS increase (MiB) over all of them,
    sampled every 5 ms by a thread."""
    seconds, memory, _ = interleaved_with_peak_rss({"only": function}, repeats)["only"]
    return seconds, memory


def make_points(n: int, kind: str) -> torch.Tensor:
    """(n, 128) float32 points: Gaussian, or 2,000 tight clusters of varied spread."""
    if kind == "gaussian":
        return torch.randn(n, 128)
    centres = torch.randn(2000, 128)
    spread = torch.rand(2000, 1) * 0.3
    member = torch.randint(2000, (n,))
    return centres[member] + spread[member] * torch.randn(n, 128)


def first_difference(a: torch.Tensor, b: torch.Tensor) -> int | None:
    """The first position where two pick sequences differ (None: identical)."""
    common = min(len(a), len(b))
    differ = torch.nonzero(a[:common] != b[:common])
    if len(differ):
        return int(differ[0])
    return None if len(a) == len(b) else common


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500_000, help="patches in the selection")
    parser.add_argument("--picks", type=int, default=500, help="picks timed per repeat")
    parser.add_argument("--points", choices=("gaussian", "clustered"), default="gaussian")
    parser.add_argument(
        "--naive", action="store_true", help="also time the from-scratch version (slow)"
    )
    parser.add_argument("--bank", type=int, default=20_000, help="bank rows for scoring")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's; 1 is steadier on a busy machine)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    projected = make_points(args.n, args.points)
    codes = quantize(projected, code_scale(float(projected.abs().max())))
    points = codes.float()  # the same codes as float32 values, for the reference
    del projected
    variants = {
        "runs": lambda: greedy_coreset(codes, args.picks),
        "reference": lambda: greedy_coreset_reference(points, args.picks),
    }
    if args.naive:
        variants["naive"] = lambda: naive_greedy(points, args.picks)
    results = interleaved_with_peak_rss(variants, args.repeats)
    difference = first_difference(results["runs"][2].indices, results["reference"][2].indices)
    per_pick = {name: seconds / args.picks for name, (seconds, _, _) in results.items()}
    print(
        f"\ncoreset, N = {args.n:,} x 128 ({args.points}), {args.picks} picks, "
        f"medians of {args.repeats}, alternating"
    )
    labels = {
        "runs": "runs, int8 codes",
        "reference": "one pick, float32",
        "naive": "naive, from scratch",
    }
    for name, (_, memory, _) in results.items():
        print(f"  {labels[name]:20s} {1e3 * per_pick[name]:8.3f} ms/pick   peak +{memory:7.1f} MiB")
    print(
        f"  speed-up over one pick at a time {per_pick['reference'] / per_pick['runs']:.2f}x; "
        f"same picks: {'yes' if difference is None else f'no, from pick {difference}'}"
    )
    print("  extrapolated (time per pick linear in N, ratio 0.1):")
    for images in (209, 391, 761):  # bottle, MVTec's largest train set, a large VisA one
        n = images * 74 * 74
        hours = {name: 0.1 * n * per_pick[name] * n / args.n / 3600 for name in per_pick}
        print(
            f"    {images} images x 5,476 patches = {n / 1e6:.2f} M: "
            f"{hours['runs']:7.2f} h (one pick at a time {hours['reference']:7.2f} h)"
        )

    queries = torch.randn(74 * 74, 1536)
    bank = torch.randn(args.bank, 1536)
    norms = squared_norms(bank)
    ours, ours_mem = timed(lambda: nearest_distances(queries, bank, norms), args.repeats)
    cdist, cdist_mem = timed(lambda: torch.cdist(queries, bank).min(dim=1).values, args.repeats)
    flops = 2 * queries.shape[0] * args.bank * 1536
    print(f"\nnearest neighbours, 5,476 queries x bank {args.bank:,} x 1,536")
    print(
        f"  ours   {ours:7.3f} s/img  {flops / ours / 1e9:6.1f} GFLOP/s  peak +{ours_mem:7.1f} MiB"
    )
    print(
        f"  cdist  {cdist:7.3f} s/img  {flops / cdist / 1e9:6.1f} GFLOP/s  "
        f"peak +{cdist_mem:7.1f} MiB"
    )
    print(f"  speed-up {cdist / ours:.2f}x")
    per_row = ours / args.bank
    for images in (209, 761):
        rows = round(0.1 * images * 74 * 74)
        print(
            f"    bank of {images} images at ratio 0.1 ({rows:,} rows): {per_row * rows:6.1f} s/img"
        )


if __name__ == "__main__":
    main()
