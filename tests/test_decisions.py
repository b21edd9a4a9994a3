"""Thresholds with a stated false-alarm rate, calibration splits, masks and regions."""

import math
from collections import deque

import numpy as np
import pytest

from l2bt.decisions.calibration_images import (
    CalibrationChoice,
    parse_calibration,
    split_calibration,
)
from l2bt.decisions.decide import decide
from l2bt.decisions.regions import find_regions
from l2bt.decisions.thresholds import Thresholds, conformal_threshold, thresholds_from_scores
from l2bt.errors import InputError
from l2bt.prediction import Prediction

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


def paths(n):
    from pathlib import Path

    return [Path(f"train/good/{i:03d}.png") for i in range(n)]


def test_default_holds_out_a_seeded_tenth_at_least_eight():
    for n, held in ((40, 8), (79, 8), (100, 10), (761, 76)):
        split = split_calibration(paths(n), CalibrationChoice(), seed=0)
        assert len(split.calibration) == held and len(split.train) == n - held
        assert set(split.train) | set(split.calibration) == set(paths(n))
        assert not set(split.train) & set(split.calibration)
        assert split.note is None
    same = split_calibration(paths(100), CalibrationChoice(), seed=0)
    other = split_calibration(paths(100), CalibrationChoice(), seed=1)
    assert same == split_calibration(paths(100), CalibrationChoice(), seed=0)
    assert same.calibration != other.calibration


def test_fewer_than_forty_images_hold_out_none_and_say_so():
    split = split_calibration(paths(39), CalibrationChoice(), seed=0)
    assert split.train == tuple(paths(39)) and split.calibration == ()
    assert "39 training images" in split.note and "\n" not in split.note


def test_validation_good_is_the_default_where_the_data_set_has_it():
    validation = paths(5)
    split = split_calibration(paths(50), CalibrationChoice(), validation=validation)
    assert split.train == tuple(paths(50)) and split.calibration == tuple(validation)
    # An explicit fraction still takes train/good.
    split = split_calibration(paths(50), CalibrationChoice(fraction=0.2), validation=validation)
    assert len(split.calibration) == 10


def test_parse_calibration(tmp_path):
    assert parse_calibration(None).is_default
    assert parse_calibration("0").disabled and parse_calibration("0.0").disabled
    assert parse_calibration("0.25").fraction == 0.25
    assert parse_calibration(str(tmp_path)).folder == tmp_path
    for bad in ("1.5", "1", "-0.1"):
        with pytest.raises(InputError, match=r"in \(0, 1\)"):
            parse_calibration(bad)
    with pytest.raises(InputError, match="calibration folder not found") as error:
        parse_calibration(str(tmp_path / "missing"))
    assert str(tmp_path / "missing") in str(error.value)


def test_a_folder_without_images_is_an_input_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(InputError, match="no image files") as error:
        split_calibration(paths(50), CalibrationChoice(folder=tmp_path))
    assert str(tmp_path) in str(error.value)


def test_a_fraction_that_leaves_nothing_to_train_on_is_an_input_error():
    with pytest.raises(InputError, match="leaves none"):
        split_calibration(paths(8), CalibrationChoice(fraction=0.5))


# ---- masks and regions ----------------------------------------------------------------------


def flood_fill_regions(mask):
    """A plain 8-connected flood fill: list of sets of (row, col) pixels, in scan order."""
    seen = np.zeros_like(mask)
    regions = []
    for r0, c0 in zip(*np.nonzero(mask), strict=True):
        if seen[r0, c0]:
            continue
        pixels, queue = set(), deque([(r0, c0)])
        seen[r0, c0] = True
        while queue:
            r, c = queue.popleft()
            pixels.add((r, c))
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    rr, cc = r + dr, c + dc
                    if (
                        0 <= rr < mask.shape[0]
                        and 0 <= cc < mask.shape[1]
                        and mask[rr, cc]
                        and not seen[rr, cc]
                    ):
                        seen[rr, cc] = True
                        queue.append((rr, cc))
        regions.append(pixels)
    return regions


@pytest.mark.parametrize(
    "shape,density,seed",
    [
        ((1, 1), 1.0, 0),
        ((13, 7), 0.3, 1),
        ((40, 33), 0.45, 2),
        ((20, 20), 0.0, 3),
        ((9, 31), 0.6, 4),
    ],
)
def test_every_region_is_a_connected_component_of_the_mask(shape, density, seed):
    rng = np.random.default_rng(seed)
    mask = rng.random(shape) < density
    anomaly_map = rng.integers(0, 5, shape).astype(np.float32)  # ties
    found = find_regions(anomaly_map, mask)
    expected = flood_fill_regions(mask)
    assert len(found) == len(expected)
    for region, pixels in zip(found, expected, strict=True):
        rows, cols = zip(*pixels, strict=True)
        assert region.area_px == len(pixels)
        assert (region.x0, region.y0) == (min(cols), min(rows))
        assert (region.x1, region.y1) == (max(cols) + 1, max(rows) + 1)  # exclusive
        values = [float(anomaly_map[r, c]) for r, c in pixels]
        assert region.max_score == max(values)
        assert region.mean_score == pytest.approx(sum(values) / len(values))
    assert [r.region for r in found] == list(range(1, len(found) + 1))


def test_decide_thresholds_map_and_score_strictly():
    anomaly_map = np.array([[0.1, 0.5, 0.5], [0.9, 0.2, 0.5]], np.float32)
    thresholds = Thresholds(
        image=0.4,
        pixel=0.5,
        false_alarm_rate=0.1,
        guaranteed_rate=0.1,
        n_calibration=9,
        calibration_images=(),
    )
    decided = decide(Prediction(anomaly_map, 0.4), thresholds)
    assert decided.verdict == "good"  # equal to the threshold is not above it
    assert decided.mask.tolist() == [[False, False, False], [True, False, False]]
    assert [(r.area_px, r.max_score) for r in decided.regions] == [(1, pytest.approx(0.9))]
    assert decide(Prediction(anomaly_map, 0.41), thresholds).verdict == "defective"
    plain = Prediction(anomaly_map, 0.4)
    assert decide(plain, None) is plain and plain.mask is None and plain.regions == []
