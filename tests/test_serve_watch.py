"""The calibration watch: its p-values against brute force, its martingale against its
definition, its false alarms under no drift (statistically), and its alarms under drift."""

import math

import numpy as np
import pytest
from scipy import stats

from l2bt.decisions.thresholds import conformal_threshold
from l2bt.errors import InputError
from l2bt.serve import watch as watch_module
from l2bt.serve.watch import (
    BETS,
    BUCKETS,
    CalibrationWatch,
    RankBag,
    RestartedBets,
    WatchState,
    conformal_p_value,
    rounded_key,
)

# ---- p-values against brute force -----------------------------------------------------------


def test_conformal_p_value_matches_brute_force():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 100):
        calibration = np.sort(rng.integers(0, 10, n)).astype(float)
        for score in (-1.0, 0.0, 4.0, 4.5, 9.0, 10.0, *rng.integers(0, 10, 20)):
            expected = (1 + np.sum(calibration >= score)) / (n + 1)
            assert conformal_p_value(calibration.tolist(), float(score)) == expected


def test_rounded_key_orders_scores_and_separates_a_relative_step_of_2_to_the_minus_11():
    rng = np.random.default_rng(1)
    magnitudes = 10.0 ** rng.uniform(-300, 300, 2000)
    values = np.concatenate([magnitudes, -magnitudes, [0.0, -0.0, 5e-324, -5e-324]])
    keys = [rounded_key(float(v)) for v in np.sort(values)]
    assert keys == sorted(keys)
    assert rounded_key(-0.0) == rounded_key(0.0)
    for v in magnitudes.tolist():
        assert rounded_key(v) < rounded_key(v * (1 + 2**-11))
        assert rounded_key(-v * (1 + 2**-11)) < rounded_key(-v)


def brute_smoothed_p_value(bag: list[float], score: float, uniform: float) -> float:
    above = sum(b > score for b in bag)
    equal = sum(b == score for b in bag)
    return (above + uniform * (equal + 1)) / (len(bag) + 1)


def test_rank_bag_matches_brute_force_with_ties_and_from_empty():
    rng = np.random.default_rng(2)
    for size in (0, 1, 5, 64):
        threshold = 60.0
        bag = RankBag(threshold)
        values = (rng.integers(1, 100, size) / 2).tolist()  # 0.5 … 49.5, many ties
        for value in values:
            bag.add(bag.bucket(value))
        for score in (0.5, 10.0, 49.5, 50.0, 59.9, *(rng.integers(1, 100, 10) / 2).tolist()):
            uniform = float(rng.random())
            expected = brute_smoothed_p_value(values, score, uniform)
            assert bag.smoothed_p_value(bag.bucket(score), uniform) == pytest.approx(expected)


def test_rank_bag_ties_scores_that_round_alike_or_lie_far_below_the_threshold():
    threshold = 1.0 + 2**-13  # inside the bucket [1, 1 + 2^-12)
    bag = RankBag(threshold)
    assert bag.bucket(1.0) == BUCKETS  # below t, in t's own bucket
    assert bag.bucket(1.0 - 2**-13) == BUCKETS - 1  # the bucket under it: [1 - 2^-13, 1)
    assert bag.bucket(0.5) == bag.bucket(0.5 + 2**-14) < bag.bucket(0.5 + 2**-12)
    # 2^16 buckets of 2^-12 relative steps: 16 binades, the lowest from 2^-16 (1 + 2^-12)
    assert bag.bucket(-5.0) == bag.bucket(0.0) == bag.bucket(2.0**-16) == 1
    assert bag.bucket(2.0**-16 * (1 + 2 * 2**-12)) == 2


def brute_watch(calibration: list[float], threshold: float, stream: list[float], seed: int):
    """The answer's and the watched p-values of each part, from lists and a fresh generator."""
    uniforms = np.random.default_rng(seed)
    bag = [c for c in calibration if c < threshold]
    answers, watched = [], []
    for score in stream:
        answers.append((1 + sum(c >= score for c in calibration)) / (len(calibration) + 1))
        if score < threshold:
            watched.append(brute_smoothed_p_value(bag, score, float(uniforms.random())))
            bag.append(score)
        else:
            watched.append(None)
    return answers, watched


def test_watch_p_values_match_brute_force_for_good_and_defective_parts():
    rng = np.random.default_rng(3)
    for n, alpha in ((9, 0.1), (20, 0.01), (51, 0.2)):
        calibration = rng.integers(0, 30, n).astype(float).tolist()
        threshold = conformal_threshold(calibration, alpha).value
        stream = rng.integers(0, 40, 3000).astype(float).tolist()  # ties, t itself, defects
        watch = CalibrationWatch(calibration, threshold, 0.01, np.random.default_rng(7))
        updates = [watch.observe(score) for score in stream]
        answers, watched = brute_watch(calibration, threshold, stream, seed=7)
        assert [u.p_value for u in updates] == pytest.approx(answers)
        assert [u.watched_p_value is None for u in updates] == [w is None for w in watched]
        pairs = [
            (u.watched_p_value, w) for u, w in zip(updates, watched, strict=True) if w is not None
        ]
        assert [got for got, _ in pairs] == pytest.approx([want for _, want in pairs])
        assert watch.state.parts_seen == len(stream)
        assert watch.state.parts_watched == sum(s < threshold for s in stream)


# ---- the martingale against its definition --------------------------------------------------


def restarted_bets_by_definition(p_values: np.ndarray, m: int) -> float:
    """log of (1/|BETS|) Σ_ε [Σ_{τ<m} π_τ ∏_{τ<i≤m} (1 + ε(p_i − ½)) + Σ_{τ≥m} π_τ],
    π_τ = 1/((τ + 1)(τ + 2)), the products summed over τ directly."""
    taus = np.arange(m)
    log_weights = -np.log((taus + 1.0) * (taus + 2.0))
    per_bet = []
    for eps in BETS:
        log_f = np.concatenate([[0.0], np.cumsum(np.log1p(eps * (p_values[:m] - 0.5)))])
        log_products = log_f[m] - log_f[taus]  # ∏ over i = τ + 1 … m
        per_bet.append(
            np.logaddexp(np.logaddexp.reduce(log_weights + log_products), -np.log(m + 1))
        )
    return float(np.logaddexp.reduce(per_bet) - np.log(len(BETS)))


@pytest.mark.parametrize("tight", [False, True])
def test_restarted_bets_match_their_definition_through_rescaling(tight, monkeypatch):
    """With tight bounds on the terms (0.5 to 2) the scale changes at almost every bet, up
    and down; with the real ones (1e-100 to 1e100) the capital passes 1e100 and back."""
    if tight:
        monkeypatch.setattr(watch_module, "_RESCALE_BELOW", 0.5)
        monkeypatch.setattr(watch_module, "_RESCALE_ABOVE", 2.0)
    rng = np.random.default_rng(4)
    p_values = np.concatenate(
        [
            rng.random(300),  # no change
            rng.random(1500) ** 8,  # small p-values: the capital grows past 1e100
            [0.0, 1.0, 0.5],
            1 - rng.random(1500) ** 8,  # large ones: the high bets lose, the low ones win
            rng.random(700),
        ]
    )
    martingale = RestartedBets()
    logs = [martingale.bet(float(p)) for p in p_values]
    assert max(logs) > math.log(1e100)
    for m in (1, 2, 3, 50, 300, 1000, 1803, 2500, 3303, len(p_values)):
        assert logs[m - 1] == pytest.approx(restarted_bets_by_definition(p_values, m), rel=1e-9)


# ---- no drift: false alarms at most δ, over fresh calibration sets ---------------------------

STREAMS, PARTS, N_CALIBRATION, ALPHA, DELTA = 100, 10_000, 100, 0.1, 0.1
FAILURE_LEVEL = 1e-4


@pytest.fixture(scope="module")
def streams_without_drift():
    """STREAMS streams of PARTS N(0, 1) parts, each with a fresh calibration set: per stream,
    whether the watch ever alarmed, whether the naive construction (p-values against the
    fixed calibration scores below t, the same martingale) did, and each one's watched
    p-values' mean and count."""
    rng = np.random.default_rng(5)
    results = []
    for _ in range(STREAMS):
        calibration = rng.standard_normal(N_CALIBRATION)
        threshold = conformal_threshold(calibration.tolist(), ALPHA).value
        stream = rng.standard_normal(PARTS).tolist()
        watch = CalibrationWatch(calibration, threshold, DELTA, rng)
        watched = [watch.observe(s).watched_p_value for s in stream]
        p_values = np.array([p for p in watched if p is not None])
        naive = naive_p_values(calibration, threshold, stream, rng)
        results.append(
            {
                "watch_alarm": watch.state.drifted,
                "naive_alarm": ever_reaches(naive, math.log(1 / DELTA)),
                "watch_p": (p_values.mean(), p_values.size),
                "naive_p": (naive.mean(), naive.size),
            }
        )
    return results


def naive_p_values(calibration, threshold, stream, rng) -> np.ndarray:
    bag = RankBag(threshold)
    for score in calibration[calibration < threshold].tolist():
        bag.add(bag.bucket(score))
    return np.array(
        [bag.smoothed_p_value(bag.bucket(s), rng.random()) for s in stream if s < threshold]
    )


def ever_reaches(p_values: np.ndarray, level: float) -> bool:
    martingale = RestartedBets()
    return any(martingale.bet(float(p)) >= level for p in p_values)


def most_alarms_by_chance() -> int:
    """The binomial(STREAMS, DELTA) count exceeded with probability ≤ FAILURE_LEVEL."""
    return int(stats.binom.ppf(1 - FAILURE_LEVEL, STREAMS, DELTA))


def uniformity_statistic(means_and_counts) -> float:
    """Σ z², z = (mean − ½)·√(12 m) per stream: about χ²(STREAMS) for i.i.d. uniform p-values
    (the CLT over m ≈ 9,000 p-values per stream); far larger when they are dependent through
    each stream's calibration set, however uniform each p-value is on its own."""
    return sum((mean - 0.5) ** 2 * 12 * count for mean, count in means_and_counts)


def test_no_drift_alarm_rate_is_at_most_delta(streams_without_drift):
    """Ville: P(alarm) ≤ δ = 0.1 per stream; more than 23 of 100 streams alarming happens
    with probability 4.0e-5 (< 1e-4) at a rate of exactly δ, less below it: the chance
    that this test fails on a correct watch (for a seed drawn at random)."""
    alarms = sum(r["watch_alarm"] for r in streams_without_drift)
    assert most_alarms_by_chance() == 23
    assert stats.binom.sf(23, STREAMS, DELTA) < FAILURE_LEVEL
    assert alarms <= most_alarms_by_chance()


def test_no_drift_watched_p_values_are_iid_uniform_across_calibration_sets(
    streams_without_drift,
):
    """Fails by chance with probability 1e-4 (above the χ²(100) upper 1e-4 quantile, 161.3),
    up to the normal approximation of each stream's mean."""
    statistic = uniformity_statistic(r["watch_p"] for r in streams_without_drift)
    assert statistic <= stats.chi2.ppf(1 - FAILURE_LEVEL, STREAMS)


def test_naive_fixed_bag_alarms_more_often_than_delta(streams_without_drift):
    """The construction the watch avoids: its p-values are uniform one by one but dependent
    through the calibration set; it fails both tests above (measured: about 64 % of streams
    alarm at δ = 0.1)."""
    alarms = sum(r["naive_alarm"] for r in streams_without_drift)
    assert alarms > most_alarms_by_chance()
    statistic = uniformity_statistic(r["naive_p"] for r in streams_without_drift)
    assert statistic > stats.chi2.ppf(1 - FAILURE_LEVEL, STREAMS)


# ---- drift: alarms within a bound ------------------------------------------------------------


def shifted_stream_alarm(shift: float, good_parts: int, parts_after: int, seed: int):
    """The watch (n = 100, α = 0.01, δ = 0.01) on `good_parts` N(0, 1) parts, then parts
    shifted by `shift` standard deviations; its state at the end."""
    rng = np.random.default_rng(seed)
    calibration = rng.standard_normal(100)
    threshold = conformal_threshold(calibration.tolist(), 0.01).value
    watch = CalibrationWatch(calibration, threshold, 0.01, rng)
    stream = rng.standard_normal(good_parts + parts_after)
    stream[good_parts:] += shift
    for score in stream.tolist():
        watch.observe(score)
    return watch.state


@pytest.mark.parametrize(
    ("shift", "good_parts", "bound"),
    [(0.25, 10_000, 3500), (0.5, 1000, 1000), (-0.5, 1000, 1500)],
)
def test_a_shift_is_flagged_within_a_bound(shift, good_parts, bound):
    """Delays measured over seeded streams of this kind (99th percentile, largest): 0.25 sd
    after 10,000 parts 1913, 2470 (200 streams); +0.5 sd after 1,000: 578, 649 (300);
    −0.5 sd after 1,000: 593, 1119 (300). Each bound is above the largest, about 1.7 to
    2.5 times the 99th percentile. An alarm before the change (probability ≤ δ = 0.01 per
    stream) also passes."""
    for seed in range(3):
        state = shifted_stream_alarm(shift, good_parts, bound, seed)
        assert state.drifted_at is not None
        assert state.drifted_at <= good_parts + bound


def test_the_flag_stays_and_the_parts_are_counted_on():
    rng = np.random.default_rng(6)
    calibration = rng.standard_normal(100)
    threshold = conformal_threshold(calibration.tolist(), 0.01).value
    watch = CalibrationWatch(calibration, threshold, 0.01, rng)
    updates = [watch.observe(s) for s in (rng.standard_normal(2000) + 1.0).tolist()]
    drifted_at = watch.state.drifted_at
    assert drifted_at is not None
    assert [u.drifted for u in updates] == [i + 1 >= drifted_at for i in range(2000)]
    for score in rng.standard_normal(3000).tolist():
        assert watch.observe(score).drifted
    assert watch.state.drifted_at == drifted_at
    assert watch.state.parts_seen == 5000
    assert watch.state.log_max >= math.log(100)


# ---- edges -----------------------------------------------------------------------------------


def test_no_calibration_score_below_the_threshold_means_no_watch():
    with pytest.raises(InputError, match="no calibration watch"):
        CalibrationWatch([2.0, 2.0, 2.0], 2.0, 0.01, np.random.default_rng(0))
    watch = CalibrationWatch([1.0, 2.0, 2.0], 2.0, 0.01, np.random.default_rng(0))
    assert watch.observe(2.0).watched_p_value is None  # good (not above t) but not watched
    assert watch.observe(1.5).watched_p_value is not None


@pytest.mark.parametrize("delta", [0.0, 1.0, -0.1, 2.0])
def test_drift_alarm_must_be_in_zero_one(delta):
    with pytest.raises(InputError, match="--drift-alarm"):
        CalibrationWatch([1.0, 2.0], 2.0, delta, np.random.default_rng(0))


def test_a_nan_score_is_refused_and_an_infinite_one_is_a_defect():
    watch = CalibrationWatch([1.0, 2.0, 3.0], 3.0, 0.01, np.random.default_rng(0))
    with pytest.raises(ValueError, match="NaN"):
        watch.observe(math.nan)
    assert watch.observe(math.inf).watched_p_value is None
    assert watch.observe(-math.inf).watched_p_value is not None
    assert watch.state.parts_seen == 2


def test_state_martingale_is_the_exponential_of_its_log():
    assert WatchState(0.01, 3, 2, math.log(5.0), math.log(5.0), None).martingale == (
        pytest.approx(5.0)
    )
    assert WatchState(0.01, 3, 2, 1e4, 1e4, 3).martingale == math.inf
