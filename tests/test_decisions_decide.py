"""decisions/decide.py: a prediction decided at the stored thresholds, masks at the
segmentation threshold after the clean-up, and the stored mask rules."""

import numpy as np
import pytest
from scipy import ndimage

from l2bt.decisions.cleanup import Cleanup
from l2bt.decisions.decide import decide, stored_mask_rules
from l2bt.decisions.thresholds import Thresholds
from l2bt.metrics import evaluate_arrays
from l2bt.prediction import Prediction

# ---- the guarantee, as a statistical test ---------------------------------------------------


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


def thresholds(**changes):
    base = Thresholds(0.5, 0.9, 0.1, 0.1, 9, tuple(f"{i}.png" for i in range(9)))
    return Thresholds(**{**base.__dict__, **changes})


@pytest.mark.usefixtures("feature_cache")
def test_decide_masks_at_the_segmentation_threshold_after_cleanup():
    rng = np.random.default_rng(0)
    anomaly_map = ndimage.uniform_filter(rng.random((37, 29)), 3).astype(np.float32)
    cleanup = Cleanup(min_region_area=4, close_radius=1, fill_holes=True)
    segmentation = float(np.quantile(anomaly_map, 0.8))
    decided = decide(
        Prediction(anomaly_map, 0.7), thresholds(segmentation=segmentation, cleanup=cleanup)
    )
    expected = cleanup.apply(anomaly_map > np.float32(segmentation))
    assert decided.mask.shape == (37, 29) and np.array_equal(decided.mask, expected)
    assert sum(r.area_px for r in decided.regions) == int(expected.sum())
    assert all(r.area_px >= 4 for r in decided.regions)
    plain = decide(Prediction(anomaly_map, 0.7), thresholds())
    assert np.array_equal(plain.mask, anomaly_map > 0.9)  # no β: the pixel threshold


@pytest.mark.usefixtures("feature_cache")
def test_stored_mask_rules_name_each_threshold_alone_and_cleaned():
    cleanup = Cleanup(min_region_area=2)
    rules = stored_mask_rules(thresholds(segmentation=0.3, cleanup=cleanup))
    assert list(rules) == ["pixel", "segmentation", "pixel+cleanup", "segmentation+cleanup"]
    values = np.array([[0.4, 0.4, 0.1, 0.95], [0.4, 0.1, 0.1, 0.1]], np.float32)
    assert rules["pixel"](values).tolist() == [[False, False, False, True], [False] * 4]
    assert rules["segmentation"](values).tolist() == [
        [True, True, False, True],
        [True] + [False] * 3,
    ]
    cleaned = [[True, True, False, False], [True] + [False] * 3]  # the lone pixel dropped
    assert rules["segmentation+cleanup"](values).tolist() == cleaned
    assert rules["pixel+cleanup"](values).tolist() == [[False] * 4, [False] * 4]
    assert list(stored_mask_rules(thresholds())) == ["pixel"]


@pytest.mark.usefixtures("feature_cache")
def test_seg_f1_at_each_rule_equals_a_plain_count():
    rng = np.random.default_rng(3)
    maps = [rng.random((h, w)).astype(np.float32) for h, w in [(9, 13), (17, 5), (6, 6)]]
    masks = [m > 0.8 for m in maps]
    masks[0][:] = False
    rules = {"low": lambda m: m > 0.5, "high": lambda m: m > 0.9}
    got = evaluate_arrays(maps, masks, mask_rules=rules).seg_f1_at
    for name, rule in rules.items():
        tp = sum(int((rule(m) & k).sum()) for m, k in zip(maps, masks, strict=True))
        fp = sum(int((rule(m) & ~k).sum()) for m, k in zip(maps, masks, strict=True))
        fn = sum(int((~rule(m) & k).sum()) for m, k in zip(maps, masks, strict=True))
        assert got[name] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert "seg_f1_at" in evaluate_arrays(maps, masks, mask_rules=rules).to_json_dict()
