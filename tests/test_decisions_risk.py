"""decisions/risk.py: the segmentation threshold by conformal risk control: exact,
monotone, and the guarantee."""

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import ndimage

from l2bt.decisions.cleanup import Cleanup
from l2bt.decisions.risk import flagged_fraction, segmentation_threshold
from l2bt.errors import InputError

CLEANUPS = [
    Cleanup(),
    Cleanup(min_region_area=3),
    Cleanup(close_radius=1),
    Cleanup(fill_holes=True),
    Cleanup(min_region_area=2, close_radius=1, fill_holes=True),
    Cleanup(min_region_area=10**6),  # removes everything: any λ meets the rule
]
BETAS = [0.01, 0.05, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9]

# ---- exactness against brute force ----------------------------------------------------------


def brute_force_threshold(maps, beta, cleanup):
    """Every distinct calibration value in turn, the rule in exact rationals; the largest
    value when none meets it."""
    maps = [np.asarray(m, dtype=np.float32) for m in maps]
    candidates = np.unique(np.concatenate([m.ravel() for m in maps]))
    budget = Fraction(repr(beta)) * (len(maps) + 1)
    for value in candidates:
        losses = sum(Fraction(int(cleanup.apply(m > value).sum()), m.size) for m in maps)
        if losses + 1 <= budget:
            return float(value)
    return float(candidates[-1])


def tied_maps(rng, count):
    """Maps of different sizes whose values come from a handful of levels (−0.0 among them)."""
    levels = np.array([-0.0, 0.0, -1.5, 0.25, 0.5, 0.75, 2.0, 1e-30, -1e-30, 3e5], np.float32)
    levels = levels[: rng.integers(2, len(levels) + 1)]
    maps = []
    for _ in range(count):
        shape = (int(rng.integers(1, 8)), int(rng.integers(1, 8)))
        maps.append(levels[rng.integers(0, len(levels), shape)])
    return maps


def neighbouring_maps(rng, count):
    """Values a few float32 steps apart across a 16-bit boundary, and far apart: both levels
    of the search matter."""
    base = np.float32(1.0).view(np.uint32) + np.uint32(65_530)
    maps = []
    for _ in range(count):
        shape = (int(rng.integers(1, 7)), int(rng.integers(1, 7)))
        near = (base + rng.integers(0, 12, shape).astype(np.uint32)).view(np.float32)
        far = (rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 3, shape)).astype(np.float32)
        maps.append(np.where(rng.random(shape) < 0.7, near, far))
    return maps


@pytest.mark.parametrize("cleanup", CLEANUPS, ids=str)
def test_exact_against_brute_force(cleanup):
    rng = np.random.default_rng(len(str(cleanup)))
    for trial in range(60):
        n = int(rng.integers(1, 9))
        maps = tied_maps(rng, n) if trial % 2 else neighbouring_maps(rng, n)
        for beta in rng.choice(BETAS, 3, replace=False):
            beta = float(beta)
            result = segmentation_threshold(lambda maps=maps: iter(maps), beta, cleanup)
            assert result.threshold == brute_force_threshold(maps, beta, cleanup), (n, beta)
            assert result.n_calibration == n
            assert result.attainable == (beta >= 1 / (n + 1))


def test_exact_on_larger_maps_without_cleanup():
    """Thousands of distinct values, counted by sorting instead of trying each on each map."""
    rng = np.random.default_rng(11)
    for _ in range(6):
        maps = [
            np.round(rng.lognormal(0, 1, (int(rng.integers(20, 60)), 37)), 2).astype(np.float32)
            for _ in range(int(rng.integers(3, 12)))
        ]
        beta = float(rng.choice([0.1, 0.25, 0.3, 0.5]))
        ordered = [np.sort(m.ravel()) for m in maps]
        candidates = np.unique(np.concatenate(ordered))
        above = [
            m.size - np.searchsorted(o, candidates, side="right")
            for m, o in zip(maps, ordered, strict=True)
        ]  # per map, (len(candidates),)
        budget = Fraction(repr(beta)) * (len(maps) + 1)
        first = next(
            (
                i
                for i in range(len(candidates))
                if sum(Fraction(int(a[i]), m.size) for a, m in zip(above, maps, strict=True)) + 1
                <= budget
            ),
            len(candidates) - 1,
        )
        result = segmentation_threshold(lambda maps=maps: maps, beta)
        assert result.threshold == float(candidates[first])


def test_unattainable_rate_gives_the_largest_value():
    rng = np.random.default_rng(5)
    maps = [rng.standard_normal((4 + i, 5)).astype(np.float32) for i in range(9)]
    for cleanup in (Cleanup(), Cleanup(min_region_area=2, close_radius=1)):
        result = segmentation_threshold(lambda: maps, 0.05, cleanup)  # 1/(n+1) = 0.1 > 0.05
        assert not result.attainable
        assert result.threshold == max(float(m.max()) for m in maps)
        assert result.attainable_rate == pytest.approx(0.1)
        assert "0.1" in result.summary() and "not the asked 0.05" in result.summary()
    attained = segmentation_threshold(lambda: maps, 0.1)  # exactly 1/(n+1): attainable
    assert attained.attainable and attained.attainable_rate == 0.1
    assert "not the asked" not in attained.summary()


# ---- the loss is monotone -------------------------------------------------------------------


@pytest.mark.parametrize("cleanup", CLEANUPS, ids=str)
def test_flagged_fraction_is_non_increasing_in_the_threshold(cleanup):
    rng = np.random.default_rng(21)
    for _ in range(25):
        shape = (int(rng.integers(1, 16)), int(rng.integers(1, 16)))
        score_map = np.round(ndimage.gaussian_filter(rng.standard_normal(shape), 1.0) * 8) / 8
        values = np.unique(score_map)
        thresholds = np.sort(np.concatenate([values, rng.uniform(-2, 2, 10), [-np.inf]]))
        fractions = [flagged_fraction(score_map, t, cleanup) for t in thresholds]
        assert np.all(np.diff(fractions) <= 0)
        assert fractions[-1] == 0.0 or thresholds[-1] < values[-1]


# ---- the guarantee, as a statistical test ---------------------------------------------------


def good_maps(rng, count, shapes, quantum, noise=1.0):
    """`count` i.i.d. defect-free score maps: each of a random shape among `shapes`, smoothed
    noise (correlated pixels; `noise` 0: constant maps) plus a per-map offset, rounded to
    multiples of `quantum` (ties; 0: continuous)."""
    which = rng.integers(0, len(shapes), count)
    maps = [None] * count
    for index, (height, width) in enumerate(shapes):
        chosen = np.flatnonzero(which == index)
        white = rng.standard_normal((len(chosen), height, width))
        smooth = ndimage.gaussian_filter(white, (0, 1.2, 1.2)) if height * width > 1 else white
        smooth = noise * smooth + 0.5 * rng.standard_normal(
            (len(chosen), 1, 1)
        )  # (count, 1, 1): per-map shift
        if quantum:
            smooth = np.round(smooth / quantum) * quantum
        for position, score_map in zip(chosen, smooth.astype(np.float32), strict=True):
            maps[position] = score_map
    return maps


def monte_carlo(n, beta, shapes, quantum, trials=2_000, n_test=10, seed=0, cleanup=None, noise=1.0):
    """Mean and standard error, over `trials` independent calibration sets of n good maps,
    of the mean flagged fraction (after `cleanup`) of n_test new good maps at the calibrated
    threshold; and the stated rate, checking the threshold in the unattainable case."""
    rng = np.random.default_rng(seed)
    rates = np.empty(trials)
    stated = set()
    chunk = 250
    for trial in range(trials):
        if trial % chunk == 0:  # fresh maps for the next `chunk` trials, made at once
            maps = good_maps(rng, chunk * (n + n_test), shapes, quantum, noise)
        first = trial % chunk * (n + n_test)
        calibration, test = maps[first : first + n], maps[first + n : first + n + n_test]
        result = segmentation_threshold(lambda calibration=calibration: calibration, beta, cleanup)
        if not result.attainable:
            assert result.threshold == max(float(m.max()) for m in calibration)
        stated.add(result.attainable_rate)
        rates[trial] = np.mean([flagged_fraction(m, result.threshold, cleanup) for m in test])
    assert len(stated) == 1
    return rates.mean(), rates.std(ddof=1) / math.sqrt(trials), stated.pop()


@pytest.mark.parametrize("n, beta", [(20, 0.05), (50, 0.01), (100, 0.001), (100, 0.05), (30, 0.2)])
def test_expected_flagged_fraction_is_at_most_the_stated_rate(n, beta):
    shapes = [(6, 7), (8, 8), (5, 11)]
    mean, se, stated = monte_carlo(n, beta, shapes, quantum=0.25, trials=2_000, seed=n)
    assert stated == (beta if beta >= 1 / (n + 1) else 1 / (n + 1))
    assert mean <= stated + 4 * se, (mean, se, stated)


def test_the_guarantee_holds_after_cleanup():
    """Clean-up that both adds pixels (closing, holes) and removes them (small regions)."""
    cleanup = Cleanup(min_region_area=3, close_radius=1, fill_holes=True)
    mean, se, stated = monte_carlo(12, 0.15, [(6, 6), (7, 5)], quantum=0.25, cleanup=cleanup)
    assert stated == 0.15
    assert mean <= stated + 4 * se, (mean, se, stated)


@pytest.mark.parametrize(
    "n, beta, shapes",
    [
        (20, 0.05, [(1, 1)]),
        (50, 0.01, [(1, 1)]),
        (30, 0.2, [(1, 1)]),
        (9, 0.35, [(1, 1)]),
        (30, 0.2, [(2, 3), (4, 4), (1, 5)]),
        (9, 0.35, [(2, 3), (4, 4), (1, 5)]),
    ],
)
def test_constant_maps_meet_split_conformal_exactly(n, beta, shapes):
    """With 1-pixel (or constant) maps of scores s_i, L_i(λ) = 1{s_i > λ} and the rule reads
    #{s_i > λ} ≤ m with m = ⌊β(n+1)⌋ − 1, so λ̂ = s_(n−m), the (n−m)-th smallest score (the
    largest when m < 0). For continuous i.i.d. scores a new score exceeds the k-th smallest of
    n with probability (n + 1 − k)/(n + 1), so the expected flagged fraction is exactly
    max(⌊β(n+1)⌋, 1)/(n + 1)."""
    expected = max(math.floor(Fraction(repr(beta)) * (n + 1)), 1) / (n + 1)
    mean, se, stated = monte_carlo(
        n, beta, shapes, quantum=0, trials=3_000, n_test=20, seed=n + 1, noise=0.0
    )
    assert mean <= stated + 4 * se
    assert abs(mean - expected) <= 4 * se, (mean, se, expected)


# ---- input --------------------------------------------------------------------------------


def test_maps_are_streamed_and_may_be_float16_or_float64():
    rng = np.random.default_rng(2)
    maps = [rng.standard_normal((5, 6)) for _ in range(12)]
    calls = []

    def stream():
        calls.append(1)
        return (m.astype(np.float16) for m in maps)

    result = segmentation_threshold(stream, 0.2, Cleanup(close_radius=1))
    assert len(calls) >= 2
    assert result.threshold == brute_force_threshold(
        [m.astype(np.float16) for m in maps], 0.2, Cleanup(close_radius=1)
    )
    wide = segmentation_threshold(lambda: maps, 0.2)
    assert wide.threshold == brute_force_threshold(maps, 0.2, Cleanup())


@pytest.mark.parametrize(
    "maps, problem",
    [
        ([], "no calibration maps"),
        ([np.zeros((2, 2)), np.full((2, 2), np.nan)], "map 1"),
        ([np.zeros((2, 2, 2))], "map 0"),
        ([np.zeros((0, 3))], "map 0"),
    ],
)
def test_bad_maps_are_refused(maps, problem):
    with pytest.raises(InputError, match=problem):
        segmentation_threshold(lambda: maps, 0.2)


def test_maps_that_change_between_passes_are_refused():
    passes = iter([[np.zeros((3, 3)), np.ones((3, 3))], [np.zeros((3, 4)), np.ones((3, 3))]])
    with pytest.raises(InputError, match="changed"):
        segmentation_threshold(lambda: next(passes), 0.5)


@pytest.mark.parametrize("beta", [0.0, 1.0, -0.1, 1.5])
def test_bad_rate_is_refused(beta):
    with pytest.raises(InputError, match="pixel-false-alarm-rate"):
        segmentation_threshold(lambda: [np.zeros((2, 2))], beta)
