"""What every benchmark script shares: interleaved timing, peak memory, FLOP counts.

Timed functions run in turn, round after round (alternating the order each round), so a
load on the machine affects every contender alike; each is called once to warm up first.
Figures are medians. Run one benchmark at a time: two on two cores make every ratio wrong.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable, Mapping

Timer = Callable[[Callable[[], object]], float]  # seconds of one call


def wall_seconds(function: Callable[[], object]) -> float:
    tic = time.perf_counter()
    function()
    return time.perf_counter() - tic


def interleaved_seconds(
    functions: Mapping[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    timer: Timer = wall_seconds,
) -> dict[str, list[float]]:
    """Seconds of each call: `warmup` untimed calls each, then `repeats` rounds in turn."""
    for function in functions.values():
        for _ in range(warmup):
            function()
    seconds: dict[str, list[float]] = {name: [] for name in functions}
    names = list(functions)
    for round_index in range(repeats):
        for name in names if round_index % 2 == 0 else names[::-1]:
            seconds[name].append(timer(functions[name]))
    return seconds


def interleaved_medians(
    functions: Mapping[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    timer: Timer = wall_seconds,
) -> dict[str, float]:
    """Median seconds per function, timed as `interleaved_seconds`."""
    seconds = interleaved_seconds(functions, repeats, warmup, timer)
    return {name: statistics.median(values) for name, values in seconds.items()}


def median_seconds(
    function: Callable[[], object], repeats: int, warmup: int = 1, timer: Timer = wall_seconds
) -> float:
    """Median seconds of one function's calls."""
    return interleaved_medians({"only": function}, repeats, warmup, timer)["only"]


def rss_bytes() -> int:
    """Resident memory of this process now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def interleaved_with_peak_rss(
    functions: Mapping[str, Callable[[], object]], repeats: int
) -> dict[str, tuple[float, float, object]]:
    """For each function: median seconds over `repeats` calls in turn, the peak RSS increase
    (MiB) during its calls, sampled every 5 ms by a thread, and what its last call returned."""
    peaks = dict.fromkeys(functions, 0)
    outputs: dict[str, object] = {}
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], rss_bytes())

    def measured(name: str) -> Callable[[], object]:
        def call() -> None:
            before = peak[0] = rss_bytes()
            outputs[name] = functions[name]()
            peaks[name] = max(peaks[name], max(peak[0], rss_bytes()) - before)

        return call

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        seconds = interleaved_medians(
            {name: measured(name) for name in functions}, repeats, warmup=0
        )
    finally:
        done.set()
        sampler.join()
    return {name: (seconds[name], peaks[name] / 2**20, outputs[name]) for name in functions}


def teacher_flops(n_tokens: int, dim: int, blocks: int, n_patches: int = 0) -> float:
    """FLOPs (multiply-adds × 2) of `blocks` ViT blocks on `n_tokens` tokens of width `dim`
    (qkv 3D², projection D², MLP 8D² per token; QKᵀ and AV 2·N²·D), plus the patch
    embedding of `n_patches` 14 × 14 RGB patches."""
    linear = 24 * n_tokens * dim * dim
    attention = 4 * n_tokens * n_tokens * dim
    return 2 * n_patches * (3 * 14 * 14) * dim + blocks * (linear + attention)
