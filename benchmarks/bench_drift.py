"""The calibration watch (`l2bt.serve.watch`): false alarms, detection delays, cost per part.

Every stream draws a fresh calibration set of `--calibration` N(0, 1) scores, sets the image
threshold t at `--alpha` as SPEC §7 does (the k-th smallest, k = ⌈(n + 1)(1 − α)⌉), then
scores `--parts` parts. Three constructions, each alarming at 1/δ:

- naive: each part below t gets a smoothed p-value against the FIXED calibration scores
  below t (the answer's p-value rescaled to the accepted range), fed to the watch's own
  martingale (`RestartedBets`). Those p-values are dependent through the calibration set.
- watch: `CalibrationWatch` itself (the bag grows with every part below t).
- mixture: the watch's p-values fed instead to the simple mixture of power martingales,
  ∫₀¹ ∏ ε p^(ε−1) dε over 20 midpoints, from part 1 (no restarts).

No drift: how many streams of `--parts` parts ever alarm, with a 95 % Clopper-Pearson
interval; Ville bounds the watch's and the mixture's rate by δ. Drift: after
`--change-at` good parts (and also from the first part), every part's score shifts up by
0.25 or 0.5 of the good scores' standard deviation (σ = 1 here); the delay is the number of
parts from the change to the alarm (">N" where a stream had none within `--delay-parts`).
Cost: µs per `CalibrationWatch.observe` on a stream without drift, median of repeats.

    .venv/bin/python benchmarks/bench_drift.py                 # a few minutes
    .venv/bin/python benchmarks/bench_drift.py --streams 20 --delay-streams 10 \\
        --parts 2000 --delay-parts 2000 --cost-parts 5000      # seconds
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import numpy as np
from scipy import stats

from l2bt.decisions.thresholds import conformal_threshold
from l2bt.serve.watch import CalibrationWatch, RankBag, RestartedBets

MIXTURE_EPSILONS = (np.arange(20) + 0.5) / 20
SHIFTS = (0.25, 0.5)

Rng = np.random.Generator
AlarmFinder = Callable[[np.ndarray, np.ndarray, float, float, Rng], int | None]


class PowerMixture:
    """The simple mixture of power martingales over MIXTURE_EPSILONS, equal weights."""

    def __init__(self) -> None:
        self._log_capitals = np.zeros(len(MIXTURE_EPSILONS))

    def bet(self, p_value: float) -> float:
        self._log_capitals += np.log(MIXTURE_EPSILONS) + (MIXTURE_EPSILONS - 1) * math.log(p_value)
        high = float(self._log_capitals.max())
        return high + math.log(float(np.exp(self._log_capitals - high).mean()))


def watch_alarm(
    scores: np.ndarray, calibration: np.ndarray, threshold: float, delta: float, rng: Rng
) -> int | None:
    """The part count at which `CalibrationWatch` first flags drift, or None."""
    watch = CalibrationWatch(calibration, threshold, delta, rng)
    for score in scores.tolist():
        if watch.observe(score).drifted:
            return watch.state.parts_seen
    return None


def component_alarm(grows: bool, mixture: bool) -> AlarmFinder:
    """An alarm finder built from the watch's parts: the bag grows or stays the calibration's;
    the martingale is the watch's or the power mixture."""

    def first_alarm(
        scores: np.ndarray, calibration: np.ndarray, threshold: float, delta: float, rng: Rng
    ) -> int | None:
        bag = RankBag(threshold)
        for score in calibration[calibration < threshold].tolist():
            bag.add(bag.bucket(score))
        martingale = PowerMixture() if mixture else RestartedBets()
        level = math.log(1.0 / delta)
        for part, score in enumerate(scores.tolist(), start=1):
            if score < threshold:
                bucket = bag.bucket(score)
                if martingale.bet(bag.smoothed_p_value(bucket, 1.0 - rng.random())) >= level:
                    return part
                if grows:
                    bag.add(bucket)
        return None

    return first_alarm


CONSTRUCTIONS: dict[str, AlarmFinder] = {
    "naive": component_alarm(grows=False, mixture=False),
    "watch": watch_alarm,
    "mixture": component_alarm(grows=True, mixture=True),
}


def calibrated(rng: Rng, n: int, alpha: float) -> tuple[np.ndarray, float]:
    calibration = rng.standard_normal(n)
    return calibration, conformal_threshold(calibration.tolist(), alpha).value


def alarm_rate(finder: AlarmFinder, args: argparse.Namespace, seed: int) -> tuple[int, int]:
    """Streams that ever alarmed without drift, of `args.streams`."""
    rng = np.random.default_rng(seed)
    alarms = 0
    for _ in range(args.streams):
        calibration, threshold = calibrated(rng, args.calibration, args.alpha)
        scores = rng.standard_normal(args.parts)
        alarms += finder(scores, calibration, threshold, args.delta, rng) is not None
    return alarms, args.streams


def delays(
    finder: AlarmFinder, args: argparse.Namespace, shift: float, change_at: int, seed: int
) -> tuple[list[float], int]:
    """Parts from the change to the alarm (inf: none within `delay_parts`), and the number
    of streams that alarmed before the change."""
    rng = np.random.default_rng(seed)
    found: list[float] = []
    early = 0
    for _ in range(args.delay_streams):
        calibration, threshold = calibrated(rng, args.calibration, args.alpha)
        scores = rng.standard_normal(change_at + args.delay_parts)
        scores[change_at:] += shift
        alarm = finder(scores, calibration, threshold, args.delta, rng)
        if alarm is not None and alarm <= change_at:
            early += 1
        else:
            found.append(math.inf if alarm is None else float(alarm - change_at))
    return found, early


def clopper_pearson(count: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    tail = (1 - level) / 2
    low = 0.0 if count == 0 else float(stats.beta.ppf(tail, count, trials - count + 1))
    high = 1.0 if count == trials else float(stats.beta.ppf(1 - tail, count + 1, trials - count))
    return low, high


def print_alarm_rates(args: argparse.Namespace) -> None:
    print(f"no drift: streams of {args.parts} parts that ever alarm (delta = {args.delta})")
    for index, (name, finder) in enumerate(CONSTRUCTIONS.items()):
        count, trials = alarm_rate(finder, args, args.seed + index)
        low, high = clopper_pearson(count, trials)
        print(
            f"  {name:8s} {count}/{trials} = {count / trials:.4f}  95% CI [{low:.4f}, {high:.4f}]"
        )


def described(found: list[float], limit: int) -> str:
    if not found:
        return "no stream"
    quantiles = np.percentile(np.array(found), [50, 90, 99], method="higher")
    shown = [f">{limit}" if math.isinf(q) else f"{q:.0f}" for q in quantiles]
    return f"median {shown[0]}, 90% {shown[1]}, 99% {shown[2]}"


def print_delays(args: argparse.Namespace) -> None:
    print(f"drift: parts from the change to the alarm ({args.delay_streams} streams each)")
    for change_at in sorted({0, args.change_at}):
        for shift in SHIFTS:
            for index, (name, finder) in enumerate(CONSTRUCTIONS.items()):
                if name == "naive":
                    continue
                seed = args.seed + 100 + index
                found, early = delays(finder, args, shift, change_at, seed)
                note = f"; {early} alarmed before the change" if early else ""
                print(
                    f"  shift {shift} sd after {change_at} parts, {name:8s} "
                    f"{described(found, args.delay_parts)}{note}"
                )


def print_cost(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    calibration, threshold = calibrated(rng, args.calibration, args.alpha)
    scores = rng.standard_normal(args.cost_parts).tolist()
    per_part = []
    for _ in range(args.repeats):
        watch = CalibrationWatch(calibration, threshold, args.delta, np.random.default_rng(0))
        tic = time.perf_counter()
        for score in scores:
            watch.observe(score)
        per_part.append((time.perf_counter() - tic) / len(scores))
    median = statistics.median(per_part) * 1e6
    print(f"cost: {median:.2f} µs per observe (median of {args.repeats} × {len(scores)} parts)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=400, help="streams without drift")
    parser.add_argument("--parts", type=int, default=10_000, help="parts per stream")
    parser.add_argument("--calibration", type=int, default=100, help="calibration scores")
    parser.add_argument("--alpha", type=float, default=0.01, help="false-alarm rate of t")
    parser.add_argument("--delta", type=float, default=0.01, help="--drift-alarm δ")
    parser.add_argument("--delay-streams", type=int, default=100, help="streams per shift")
    parser.add_argument("--change-at", type=int, default=5000, help="good parts before drift")
    parser.add_argument("--delay-parts", type=int, default=5000, help="parts after a change")
    parser.add_argument("--cost-parts", type=int, default=100_000, help="parts per timing")
    parser.add_argument("--repeats", type=int, default=5, help="timings")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    print_alarm_rates(args)
    print_delays(args)
    print_cost(args)


if __name__ == "__main__":
    main()
