"""Resident memory over a loop of image-sized patch-anomaly steps, with and without the
fixed mmap threshold of `l2bt.utils.allocator` (what `l2bt` sets for every verb).

Each variant runs in a fresh process: 16 steps of 11,000 patches × 384 floats (a tiles
fit's 8 windows of ViT-S), anonymous resident memory read after each step. Printed: the
swing (max − min after the first step) and the peak, per variant, medians over repeats.

    python benchmarks/bench_allocator.py --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
LOOP = """
import sys, torch
from l2bt.anomaly_map import patch_anomaly
from l2bt.students import Student
from l2bt.utils.allocator import bound_large_buffers

if sys.argv[1] == "bound":
    assert bound_large_buffers()
torch.manual_seed(0)
forward, backward = Student(384), Student(384)

def anonymous_mib():
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("RssAnon:"))
    return int(line.split()[1]) / 1024

after = []
for _ in range(16):
    early, late = torch.randn(11000, 384), torch.randn(11000, 384)
    with torch.no_grad():
        patch_anomaly(forward, backward, early, late)
    del early, late
    after.append(anonymous_mib())
print(max(after[1:]) - min(after[1:]), max(after))
"""


def one_run(variant: str) -> tuple[float, float]:
    env = {"PYTHONPATH": SRC, "OMP_NUM_THREADS": "2"}
    out = subprocess.run(
        [sys.executable, "-c", LOOP, variant], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, list[tuple[float, float]]] = {"default": [], "bound": []}
    for _ in range(args.repeats):  # interleaved, so both see the same machine
        for variant, found in runs.items():
            found.append(one_run(variant))
    for variant, found in runs.items():
        swing = statistics.median(s for s, _ in found)
        peak = statistics.median(p for _, p in found)
        print(f"{variant:8s} anonymous RSS swing {swing:7.1f} MiB, peak {peak:7.1f} MiB")


if __name__ == "__main__":
    main()
