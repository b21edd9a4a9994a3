"""decisions/thresholds.py: thresholds with a stated false-alarm rate, their rank and
their round trip."""

import math

import numpy as np
import pytest

from l2bt.decisions.thresholds import Thresholds, conformal_threshold, thresholds_from_scores
from l2bt.errors import InputError

# ---- the guarantee, as a statistical test ---------------------------------------------------


def monte_carlo_false_alarms(
    n: int, alpha: float, draw, trials: int = 20_000, n_test: int = 40, seed: int = 0
):
    """Mean and standard error, over `trials` independent calibration sets of n scores,
    of the fraction of n_test new exchangeable scores above the conformal threshold."""
    rng = np.random.default_rng(seed)
    rates = np.empty(trials)
    for t in range(trials):
        scores = draw(rng, n + n_test)
        threshold = conformal_threshold(scores[:n], alpha).value
        rates[t] = np.mean(scores[n:] > threshold)
    return rates.mean(), rates.std(ddof=1) / math.sqrt(trials)


def continuous(rng, size):
    return rng.lognormal(0.0, 0.5, size)


def with_ties(rng, size):
    return rng.integers(0, 6, size).astype(float)  # six distinct values: heavy ties


@pytest.mark.parametrize("n,alpha", [(19, 0.1), (49, 0.1), (99, 0.05), (60, 0.2), (199, 0.01)])
def test_mean_false_alarm_rate_is_at_most_alpha_and_not_needlessly_low(n, alpha):
    mean, se = monte_carlo_false_alarms(n, alpha, continuous, trials=4000)
    k = math.ceil((n + 1) * (1 - alpha))
    exact = 1 - k / (n + 1)  # E[rate] for continuous scores, exchangeable
    assert exact <= alpha + 1e-12
    assert mean <= alpha + 4 * se  # the guarantee
    assert abs(mean - exact) <= 4 * se  # and it is tight: about 1 - k/(n+1)
    assert exact >= alpha - 1 / (n + 1)


@pytest.mark.parametrize("n,alpha", [(30, 0.1), (99, 0.05)])
def test_ties_only_lower_the_false_alarm_rate(n, alpha):
    mean, se = monte_carlo_false_alarms(n, alpha, with_ties, trials=4000)
    assert mean <= alpha + 4 * se


@pytest.mark.parametrize("n,alpha", [(8, 0.01), (5, 0.1), (40, 0.02)])
def test_too_few_images_use_the_largest_score_and_state_one_over_n_plus_one(n, alpha):
    rng = np.random.default_rng(n)
    scores = rng.random(n)
    threshold = conformal_threshold(scores, alpha)
    assert math.ceil((n + 1) * (1 - alpha)) > n
    assert threshold.value == scores.max() and threshold.rank == n
    assert threshold.guaranteed_rate == pytest.approx(1 / (n + 1))
    mean, se = monte_carlo_false_alarms(n, alpha, continuous, trials=4000)
    assert mean <= 1 / (n + 1) + 4 * se and abs(mean - 1 / (n + 1)) <= 4 * se


def test_the_rank_is_computed_exactly():
    scores = list(range(1, 100))  # n = 99: (n + 1)(1 - 0.01) = 99 exactly, not 99.000…01
    threshold = conformal_threshold(scores, 0.01)
    assert threshold.rank == 99 and threshold.value == 99 and threshold.guaranteed_rate == 0.01
    threshold = conformal_threshold(list(range(1, 20)), 0.05)  # (20)(0.95) = 19
    assert threshold.rank == 19 and threshold.guaranteed_rate == 0.05


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5])
def test_a_rate_outside_zero_one_is_an_input_error(alpha):
    with pytest.raises(InputError, match="false-alarm-rate"):
        conformal_threshold([1.0, 2.0], alpha)


def test_thresholds_round_trip_and_use_the_worse_of_the_two_guarantees():
    thresholds = thresholds_from_scores(
        [3, 1, 2, 5, 4], [9, 8, 7, 6, 10], 0.5, [f"img{i}.png" for i in range(5)]
    )
    # k = ceil(6 · 0.5) = 3: third smallest of each
    assert (thresholds.image, thresholds.pixel) == (3.0, 8.0)
    assert thresholds.guaranteed_rate == 0.5 and thresholds.n_calibration == 5
    assert Thresholds.from_dict(thresholds.to_dict()) == thresholds
    small = thresholds_from_scores([1, 2], [1, 2], 0.1, ["a", "b"])
    assert small.guaranteed_rate == pytest.approx(1 / 3)
    assert "not the asked 0.1" in small.summary()


# ---- which images calibrate -----------------------------------------------------------------


# ---- masks and regions ----------------------------------------------------------------------
