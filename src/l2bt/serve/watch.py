"""The calibration watch: an alarm for good parts that no longer look like calibration.

Let t be the image threshold, an order statistic of the calibration scores (§7's k-th). Only
scores strictly below t take part: the calibration scores below t start a bag; each part
scoring below t gets Vovk's smoothed conformal p-value against the bag, p = (#above +
U·(#equal + 1)) / (|bag| + 1), U uniform, then joins it. The p-values drive a conformal test
martingale that may start betting at any part (`RestartedBets`: bets 1 + ε(p − ½), ε = ±½,
±1, mixed over start parts); at 1/δ the model is flagged drifted, for good.
Guarantee: P(ever flagged) ≤ δ, over any number of parts, if the calibration scores and the
parts' scores are independent draws from one distribution (any, ties included); it is
enough that the parts' scores below t be i.i.d. with the calibration scores' law below t
(defects that score above t do not matter). Proof: given t and the calibration scores at or
above it, those below t are i.i.d. from the law cut at t, and so are the parts'; so the
bag's sequence is i.i.d., its smoothed p-values i.i.d. uniform, the capital a non-negative
martingale from 1, and Ville's inequality bounds its crossing of 1/δ. (Against the fixed
calibration set instead, parts' p-values are dependent through it: no such bound holds.)
Scores are rounded down to a relative step of 2^-12 first, a fixed monotone map that keeps
all of the above, so the bag is two fixed 512 KiB tables of counts, nothing kept per part.
One watch per model version, called from one thread (nothing is locked).
"""

from __future__ import annotations

import bisect
import math
import struct
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from l2bt.errors import InputError

BETS = (-1.0, -0.5, 0.5, 1.0)  # ε of the bets 1 + ε(p − ½): ε < 0 wins on high scores
MANTISSA_BITS = 12  # scores are rounded down to a relative step of 2^-MANTISSA_BITS
BUCKETS = 1 << 16  # buckets under t; rounded scores below the lowest one share it
UNIFORMS_AT_ONCE = 1024  # uniform draws taken from the generator at a time
_DROPPED_BITS = 52 - MANTISSA_BITS
_MAGNITUDE = (1 << 63) - 1
_RESCALE_ABOVE = 1e100  # the martingale's terms are rescaled when their largest leaves
_RESCALE_BELOW = 1e-100  # [1e-100, 1e100]


def check_drift_alarm(delta: float) -> None:
    if not 0.0 < delta < 1.0:
        raise InputError(f"--drift-alarm must be in (0, 1), got {delta}")


def conformal_p_value(calibration_scores: Sequence[float], score: float) -> float:
    """(1 + #{calibration ≥ score}) / (n + 1), the calibration scores sorted ascending (a
    list: bisect is slow on arrays): the answer's p-value (SPEC §13). Valid: a good part
    exchangeable with the calibration images has P(p ≤ a) ≤ a."""
    n = len(calibration_scores)
    at_or_above = n - bisect.bisect_left(calibration_scores, score)
    return (1 + at_or_above) / (n + 1)


def rounded_key(score: float) -> int:
    """An integer that orders as the score does, its mantissa cut to MANTISSA_BITS bits."""
    (bits,) = struct.unpack("<q", struct.pack("<d", score + 0.0))  # + 0.0: -0.0 is 0.0
    ordered = bits if bits >= 0 else ~(bits & _MAGNITUDE)
    return ordered >> _DROPPED_BITS


class RankBag:
    """Counts of rounded scores below a threshold t over BUCKETS buckets, with a Fenwick tree
    of them for counts at or below a bucket: each rounded value up to t's has its bucket,
    the lowest also takes every lower one. 2 × 512 KiB, whatever the number of scores."""

    def __init__(self, threshold: float) -> None:
        self._lowest_key = rounded_key(threshold) - BUCKETS + 1
        self._counts = array("q", bytes(8 * (BUCKETS + 1)))
        self._tree = array("q", bytes(8 * (BUCKETS + 1)))
        self.size = 0

    def bucket(self, score: float) -> int:
        """The 1-based bucket of a score below the threshold."""
        return max(rounded_key(score) - self._lowest_key, 0) + 1

    def add(self, bucket: int) -> None:
        self._counts[bucket] += 1
        self.size += 1
        tree = self._tree
        while bucket <= BUCKETS:
            tree[bucket] += 1
            bucket += bucket & -bucket

    def at_or_below(self, bucket: int) -> int:
        tree, total = self._tree, 0
        while bucket > 0:
            total += tree[bucket]
            bucket -= bucket & -bucket
        return total

    def smoothed_p_value(self, bucket: int, uniform: float) -> float:
        """(#above + uniform·(#equal + 1)) / (size + 1) for a new score in `bucket`."""
        above = self.size - self.at_or_below(bucket)
        return (above + uniform * (self._counts[bucket] + 1)) / (self.size + 1)


class RestartedBets:
    """A test martingale on p-values that can start betting at any part: the mixture, over
    start parts τ = 0, 1, … with weights 1/((τ + 1)(τ + 2)) (summing to 1) and over BETS
    with equal weights, of ∏_{τ < i ≤ m} (1 + ε(p_i − ½)) after m p-values. For i.i.d.
    uniform p-values each term is a non-negative martingale from 1, and so is the mixture.
    A change after τ parts costs log((τ + 1)(τ + 2)) of evidence: the delay to an alarm
    grows as log τ, where one product from the start would first win back what it lost on
    unchanged parts. Kept as exp(scale) × terms: per ε, the products of the started τ."""

    def __init__(self) -> None:
        self._started = [0.0] * len(BETS)
        self._scale = 0.0  # log
        self._unscale = 1.0  # exp(-scale)
        self.bets = 0
        self.log_capital = 0.0

    def bet(self, p_value: float) -> float:
        """Stake the capital on one p-value; the new log capital."""
        self.bets += 1
        m = self.bets
        new_start = self._unscale / (m * (m + 1))  # the weight of τ = m − 1
        started = [
            (term + new_start) * (1.0 + eps * (p_value - 0.5))
            for term, eps in zip(self._started, BETS, strict=True)
        ]
        largest = max(started)
        if not _RESCALE_BELOW <= largest <= _RESCALE_ABOVE:
            started = [term / largest for term in started]
            self._scale += math.log(largest)
            self._unscale = math.exp(-self._scale)
        self._started = started
        not_started = self._unscale / (m + 1)  # the weights of τ ≥ m, summed
        self.log_capital = self._scale + math.log(sum(started) / len(BETS) + not_started)
        return self.log_capital


@dataclass(frozen=True)
class WatchUpdate:
    """What one part did: its answer's p-value; the smoothed p-value its score fed the
    martingale with (None when not below the threshold); whether the model is flagged
    drifted after it."""

    p_value: float
    watched_p_value: float | None
    drifted: bool


@dataclass(frozen=True)
class WatchState:
    """A snapshot: parts seen since the model was loaded, those whose scores fed the
    martingale, its log value and running maximum, and the part count at the alarm."""

    delta: float
    parts_seen: int
    parts_watched: int
    log_martingale: float
    log_max: float
    drifted_at: int | None

    @property
    def drifted(self) -> bool:
        return self.drifted_at is not None

    @property
    def martingale(self) -> float:
        return math.exp(self.log_martingale) if self.log_martingale < 709.0 else math.inf


class CalibrationWatch:
    """The watch of one model version (see the module docstring).

    `calibration_scores`: the calibration images' scores, as stored; `threshold`: the image
    threshold, one of them (or fixed without looking at the scores below it); `rng`: the
    uniform draws that split ties. Raises InputError when no calibration score is below the
    threshold: there is then nothing to compare the good parts with, and no watch.
    """

    def __init__(
        self,
        calibration_scores: Sequence[float] | np.ndarray,
        threshold: float,
        delta: float,
        rng: np.random.Generator,
    ) -> None:
        check_drift_alarm(delta)
        calibration = np.sort(np.asarray(calibration_scores, dtype=np.float64))
        if calibration.ndim != 1 or not np.isfinite(calibration).all():
            raise ValueError("calibration scores must be a flat sequence of finite numbers")
        if not math.isfinite(threshold):
            raise ValueError(f"the threshold must be finite, got {threshold}")
        below = calibration[calibration < threshold]
        if below.size == 0:
            raise InputError(
                f"no calibration score is below the image threshold {threshold:.6g}: "
                "nothing to compare good parts with, no calibration watch"
            )
        self._calibration = calibration.tolist()
        self._threshold = float(threshold)
        self._delta = delta
        self._level = math.log(1.0 / delta)
        self._rng = rng
        self._uniforms: list[float] = []
        self._bag = RankBag(self._threshold)
        for score in below.tolist():
            self._bag.add(self._bag.bucket(score))
        self._martingale = RestartedBets()
        self._seen = self._watched = 0
        self._log_max = 0.0
        self._drifted_at: int | None = None

    def observe(self, score: float) -> WatchUpdate:
        """Count one part, good or defective; its score feeds the martingale if below t."""
        if math.isnan(score):
            raise ValueError("a part's score is NaN")
        self._seen += 1
        p_value = conformal_p_value(self._calibration, score)
        watched = self._watch(score) if score < self._threshold else None
        return WatchUpdate(p_value, watched, self._drifted_at is not None)

    def _watch(self, score: float) -> float:
        """Bet on the score's smoothed p-value against the bag, then add it; the p-value."""
        bucket = self._bag.bucket(score)
        p_value = self._bag.smoothed_p_value(bucket, self._uniform())
        log_capital = self._martingale.bet(p_value)
        self._bag.add(bucket)
        self._watched += 1
        self._log_max = max(self._log_max, log_capital)
        if self._drifted_at is None and log_capital >= self._level:
            self._drifted_at = self._seen
        return p_value

    def _uniform(self) -> float:
        """The generator's next uniform draw in [0, 1), as `rng.random()` would give it."""
        if not self._uniforms:
            self._uniforms = self._rng.random(UNIFORMS_AT_ONCE).tolist()[::-1]
        return self._uniforms.pop()

    @property
    def state(self) -> WatchState:
        return WatchState(
            delta=self._delta,
            parts_seen=self._seen,
            parts_watched=self._watched,
            log_martingale=self._martingale.log_capital,
            log_max=self._log_max,
            drifted_at=self._drifted_at,
        )
