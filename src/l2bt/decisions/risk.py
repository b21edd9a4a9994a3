"""Segmentation threshold by conformal risk control (Angelopoulos et al., ICLR 2024; SPEC §7).

L_i(λ), the fraction of calibration map i's pixels flagged at λ (map > λ, then clean-up), is
a non-increasing, right-continuous step function with values in [0, 1], 0 above the map's
maximum. For n defect-free calibration maps and β in (0, 1), λ̂ is the smallest λ with
(n/(n+1))·mean_i L_i(λ) + 1/(n+1) ≤ β. If the n calibration maps and the map of a new good
part are exchangeable, the expected fraction of the new part's pixels flagged at λ̂ is ≤ β:
on average over calibration sets (marginal), not for every set, part or pixel. When
β < 1/(n+1) no λ qualifies; λ̂ is then the largest calibration value (nothing flagged on
the calibration maps) and the rate that holds is 1/(n+1): a new map has a flagged pixel only
if its maximum beats all n others, with probability ≤ 1/(n+1).

The mean loss only steps at calibration values, so λ̂ is one of them, found exactly: maps
compared as float32, searched through the monotone integer view of their bits, the rule
tested in exact rationals (β taken as its decimal). Memory does not grow with the pixels:
the maps are streamed, several times. Two passes: a 65,536-bin histogram per map size of the
top 16 bits brackets λ̂, one of the low 16 bits inside the bracket pins it, each level by
bisection over the bit patterns present. With clean-up (still monotone in λ) each step of
the bisections is one more pass: at most 34 passes, fewer with few distinct values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from l2bt.decisions.cleanup import Cleanup
from l2bt.errors import InputError

MapSource = Callable[[], Iterable[np.ndarray]]  # a fresh iteration over the maps per call

HALF_BITS = 16
BINS = 1 << HALF_BITS
LOW_BITS = BINS - 1
SIGN_BIT = 0x80000000
FLUSH_VALUES = 1 << 22  # values buffered per histogram before one bincount over them


@dataclass(frozen=True)
class SegmentationThreshold:
    """λ̂ and the rate it guarantees: β, or 1/(n + 1) when β is below that."""

    threshold: float  # a pixel is flagged when its map value is above it
    beta: float
    attainable_rate: float
    n_calibration: int
    attainable: bool  # β ≥ 1/(n + 1)

    def summary(self) -> str:
        """One line for people: the threshold and the expected flagged fraction it bounds."""
        line = (
            f"segmentation threshold {self.threshold:.6g} from {self.n_calibration} "
            f"calibration maps: expected fraction of a good part's pixels flagged "
            f"<= {self.attainable_rate:.3g}"
        )
        if not self.attainable:
            line += (
                f" (not the asked {self.beta:g}: {self.n_calibration} calibration maps "
                f"guarantee no less than 1/(n+1); the threshold is their largest value)"
            )
        return line


def check_pixel_false_alarm_rate(beta: float) -> None:
    if not 0.0 < beta < 1.0:
        raise InputError(f"--pixel-false-alarm-rate must be in (0, 1), got {beta}")


def segmentation_threshold(
    maps: MapSource, beta: float, cleanup: Cleanup | None = None
) -> SegmentationThreshold:
    """The risk-controlling threshold over the calibration maps (see the module docstring).

    `maps()` must give the same (H, W) maps, in the same order, at every call.
    """
    check_pixel_false_alarm_rate(beta)
    sizes, high, largest = _survey(maps)
    n = len(sizes)
    budget = Fraction(repr(float(beta))) * (n + 1)
    attainable = budget >= 1
    key = _search(maps, sizes, high, budget, cleanup or Cleanup()) if attainable else largest
    return SegmentationThreshold(
        threshold=float(_float_of_key(key)),
        beta=float(beta),
        attainable_rate=float(beta) if attainable else 1.0 / (n + 1),
        n_calibration=n,
        attainable=attainable,
    )


def flagged_fraction(
    score_map: np.ndarray, threshold: float, cleanup: Cleanup | None = None
) -> float:
    """L(λ): the fraction of the (H, W) map's pixels above `threshold`, after clean-up."""
    values = np.asarray(score_map, dtype=np.float32)
    return _flagged_count(values, np.float32(threshold), cleanup or Cleanup()) / values.size


def _flagged_count(values: np.ndarray, threshold: np.float32, cleanup: Cleanup) -> int:
    mask = values > threshold  # (H, W)
    if cleanup.is_identity or not mask.any():  # clean-up keeps an empty mask empty
        return int(np.count_nonzero(mask))
    return int(np.count_nonzero(cleanup.apply(mask)))


def _within_rate(flagged_by_size: Mapping[int, int], budget: Fraction) -> bool:
    """The rule's condition times (n + 1), exactly: Σ_i L_i + 1 ≤ β(n + 1).

    `flagged_by_size` maps a pixel count to the flagged pixels of all maps of that size.
    """
    losses = sum(
        (Fraction(int(flagged), size) for size, flagged in flagged_by_size.items()),
        start=Fraction(0),
    )
    return losses + 1 <= budget


def _first_true(below: int, top: int, holds: Callable[[int], bool]) -> int:
    """The smallest x in (below, top] where `holds` turns true, for `holds` false up to some
    point and true from there on, with holds(top) true (neither end is evaluated)."""
    while top - below > 1:
        middle = (below + top) // 2
        if holds(middle):
            top = middle
        else:
            below = middle
    return top


def _order_keys(values: np.ndarray) -> np.ndarray:
    """uint32 keys in the order of the float32 values (one key for −0.0 and +0.0)."""
    bits = (values + np.float32(0.0)).view(np.uint32)  # −0.0 + 0.0 = +0.0
    return np.where(bits >= SIGN_BIT, ~bits, bits | np.uint32(SIGN_BIT))


def _float_of_key(key: int) -> np.float32:
    bits = key & ~SIGN_BIT if key & SIGN_BIT else ~key & 0xFFFFFFFF
    return np.uint32(bits).view(np.float32)


def _read(maps: MapSource, sizes: Sequence[int] | None = None) -> Iterator[np.ndarray]:
    """Each calibration map as a finite float32 (H, W) array; with `sizes` (from an earlier
    pass), also that the maps have not changed in number or size."""
    count = 0
    for index, score_map in enumerate(maps()):
        values = np.asarray(score_map, dtype=np.float32)
        if values.ndim != 2 or values.size == 0:
            raise InputError(
                f"calibration map {index}: expected a non-empty (H, W) map, "
                f"got shape {values.shape}"
            )
        if not np.isfinite(values).all():
            raise InputError(f"calibration map {index}: has values that are not finite")
        if sizes is not None and (index >= len(sizes) or values.size != sizes[index]):
            raise InputError("the calibration maps changed between passes over them")
        count += 1
        yield values
    if sizes is not None and count != len(sizes):
        raise InputError("the calibration maps changed between passes over them")
    if count == 0:
        raise InputError("no calibration maps: a segmentation threshold needs at least one")


class _HistogramsBySize:
    """65,536-bin histograms of 16-bit values, one per map size; small maps' values are
    buffered so that one bincount covers many of them."""

    def __init__(self) -> None:
        self._counts: dict[int, np.ndarray] = {}
        self._pending: dict[int, list[np.ndarray]] = {}
        self._pending_values = 0

    def add(self, size: int, values: np.ndarray) -> None:
        if size not in self._counts:
            self._counts[size] = np.zeros(BINS, dtype=np.int64)
            self._pending[size] = []
        self._pending[size].append(values.astype(np.uint16).ravel())
        self._pending_values += values.size
        if self._pending_values >= FLUSH_VALUES:
            self._flush()

    def tails(self) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """The bins that hold a value of any size, ascending, and per size how many values
        lie above each of those bins."""
        self._flush()
        present = np.flatnonzero(sum(self._counts.values(), start=np.zeros(BINS, np.int64)))
        compact = {size: counts[present] for size, counts in self._counts.items()}  # (B,) each
        return present, {size: c.sum() - np.cumsum(c) for size, c in compact.items()}

    def _flush(self) -> None:
        for size, parts in self._pending.items():
            if parts:
                self._counts[size] += np.bincount(np.concatenate(parts), minlength=BINS)
                parts.clear()
        self._pending_values = 0


def _survey(maps: MapSource) -> tuple[list[int], _HistogramsBySize, int]:
    """First pass: each map's pixel count, the histograms of the keys' top 16 bits and the
    largest key."""
    sizes: list[int] = []
    high = _HistogramsBySize()
    largest = 0
    for values in _read(maps):
        keys = _order_keys(values)  # (H, W) uint32
        sizes.append(values.size)
        high.add(values.size, keys >> HALF_BITS)
        largest = max(largest, int(keys.max()))
    return sizes, high, largest


def _search(
    maps: MapSource, sizes: list[int], high: _HistogramsBySize, budget: Fraction, cleanup: Cleanup
) -> int:
    """The key of λ̂: the top 16 bits from the first pass's histograms, then the low 16 bits
    from a second pass's, each by bisection over the bit patterns present in the maps.

    The rule at a key depends only on which values lie above it, so it is constant from one
    present key up to the next: bisecting over present bins, then present low parts, finds
    the smallest key of all where it holds (λ̂ lies in the first bin whose top passes).
    Without clean-up the counts come from the histograms; with it, each step is a pass.
    """
    bins, above_bin = high.tails()  # (B,) and per size (B,)

    def holds_at_bin(index: int) -> bool:
        if cleanup.is_identity:
            flagged = {size: int(above[index]) for size, above in above_bin.items()}
            return _within_rate(flagged, budget)
        key = int(bins[index]) << HALF_BITS | LOW_BITS
        return _within_rate_after_cleanup(maps, sizes, key, cleanup, budget)

    top_index = _first_true(-1, len(bins) - 1, holds_at_bin)
    top = int(bins[top_index])
    low = _HistogramsBySize()
    for values in _read(maps, sizes):
        keys = _order_keys(values)  # (H, W) uint32
        low.add(values.size, keys[(keys >> HALF_BITS) == top] & LOW_BITS)
    lows, above_low = low.tails()  # (L,) and per size (L,): values of bin `top` above each

    def holds_at_low(index: int) -> bool:
        if cleanup.is_identity:
            flagged = {
                size: int(above_bin[size][top_index] + above_low[size][index]) for size in above_bin
            }
            return _within_rate(flagged, budget)
        key = top << HALF_BITS | int(lows[index])
        return _within_rate_after_cleanup(maps, sizes, key, cleanup, budget)

    bottom = int(lows[_first_true(-1, len(lows) - 1, holds_at_low)])
    return top << HALF_BITS | bottom


def _within_rate_after_cleanup(
    maps: MapSource, sizes: Sequence[int], key: int, cleanup: Cleanup, budget: Fraction
) -> bool:
    """The rule at one threshold with clean-up: one pass, cut short once it fails."""
    threshold = _float_of_key(key)
    spent = Fraction(1)
    for values in _read(maps, sizes):
        spent += Fraction(_flagged_count(values, threshold, cleanup), values.size)
        if spent > budget:  # losses are never negative: the rest cannot bring it back
            return False
    return True
