"""The further figures (P-AP, absolute bins, F1-max, AUPIMO, decisions) and the parallel
counting, against plain implementations written here: every threshold, plain loops."""

import itertools
import math

import numpy as np
import pytest
from scipy import ndimage

from l2bt.metrics import (
    ABSOLUTE_BINS,
    FPR_LIMITS,
    StreamingEvaluator,
    evaluate_arrays,
    format_table,
)
from l2bt.metrics.cells import CellCounter
from l2bt.metrics.parallel import ParallelCellCounter
from l2bt.metrics.precision_recall import ImageDecisions, image_f1_max
from metric_references import random_case as shared_random_case
from metric_references import trapezoid_up_to

# ---- plain references --------------------------------------------------------------------------


def pixels(maps, masks):
    normal = np.concatenate([m[~k] for m, k in zip(maps, masks, strict=True)]).astype(float)
    defect = np.concatenate([m[k] for m, k in zip(maps, masks, strict=True)]).astype(float)
    return normal, defect


def plain_average_precision(normal, defect):
    """sklearn's definition: Σ (R_k − R_{k−1}) P_k over distinct scores, descending."""
    if defect.size == 0:
        return None
    ap, previous_recall = 0.0, 0.0
    for t in sorted(set(np.concatenate([normal, defect]).tolist()), reverse=True):
        tp, fp = np.sum(defect >= t), np.sum(normal >= t)
        recall = tp / defect.size
        ap += (recall - previous_recall) * tp / (tp + fp)
        previous_recall = recall
    return ap


def plain_f1_max(negatives, positives):
    if positives.size == 0:
        return None
    best = 0.0
    for t in set(np.concatenate([negatives, positives]).tolist()):
        tp, fp = np.sum(positives >= t), np.sum(negatives >= t)
        best = max(best, 2 * tp / (2 * tp + fp + (positives.size - tp)))
    return best


def plain_aupro_absolute(maps, masks):
    """AUPRO per limit over the absolute area bins, by definition (as test_metrics)."""
    normal, _ = pixels(maps, masks)
    regions = []
    for m, k in zip(maps, masks, strict=True):
        labels, n = ndimage.label(k, structure=np.ones((3, 3)))
        regions += [m[labels == i].astype(float) for i in range(1, n + 1)]
    thresholds = sorted(set(np.concatenate([normal, *regions]).tolist()), reverse=True)
    out = {limit: {} for limit in FPR_LIMITS}
    for name in ABSOLUTE_BINS:
        top = math.inf if name == "all" else int(name[2:])
        chosen = [r for r in regions if r.size <= top]
        for limit in FPR_LIMITS:
            if not chosen or normal.size == 0:
                out[limit][name] = None
                continue
            points = [(0.0, 0.0)] + [
                (float(np.mean(normal >= t)), float(np.mean([np.mean(r >= t) for r in chosen])))
                for t in thresholds
            ]
            out[limit][name] = trapezoid_up_to(points, limit) / limit
    return out


def plain_aupimo(maps, masks, lower, upper):
    """AUPIMO by the module's definition: every distinct score a threshold, straight lines
    on a log-FPR axis, cut at the bounds; a segment from FPR 0 flat at its end."""
    normal_maps = [m.astype(float) for m, k in zip(maps, masks, strict=True) if not k.any()]
    out = {}
    for i, (m, k) in enumerate(zip(maps, masks, strict=True)):
        if not k.any() or not normal_maps:
            continue
        defect = m[k].astype(float)
        scores = np.concatenate([*(n.ravel() for n in normal_maps), defect])
        points = [(0.0, 0.0)] + [
            (float(np.mean([np.mean(n >= t) for n in normal_maps])), float(np.mean(defect >= t)))
            for t in sorted(set(scores.tolist()), reverse=True)
        ]
        area = 0.0
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            lo, hi = max(x0, lower), min(x1, upper)
            if hi <= lo:
                continue
            if x0 == 0:
                y_lo = y_hi = y1
            else:

                def at(x, x0=x0, y0=y0, x1=x1, y1=y1):
                    return y0 + (y1 - y0) * (math.log(x) - math.log(x0)) / math.log(x1 / x0)

                y_lo, y_hi = at(lo), at(hi)
            area += math.log(hi / lo) * (y_lo + y_hi) / 2
        out[str(i)] = min(max(area / math.log(upper / lower), 0.0), 1.0)
    return out


def random_case(seed, n_images=5, levels=None, size=(3, 12)):
    """Small random maps, some without defects; `levels`: few distinct scores (ties)."""
    return shared_random_case(seed, n_images, levels, size, every_other_defect_free=True)


CASES = [(seed, None) for seed in range(6)] + [(100 + seed, 4) for seed in range(6)]


# ---- pixel figures ------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "levels"), CASES)
def test_pixel_ap_and_f1_max_match_brute_force(seed, levels):
    maps, masks = random_case(seed, levels=levels)
    normal, defect = pixels(maps, masks)
    got = evaluate_arrays(maps, masks)
    expected_ap = plain_average_precision(normal, defect)
    expected_f1 = plain_f1_max(normal, defect)
    if expected_ap is None:
        assert got.p_ap is None and got.oracle.pixel_f1_max is None
    else:
        assert got.p_ap == pytest.approx(expected_ap, abs=1e-12)
        assert got.oracle.pixel_f1_max == pytest.approx(expected_f1, abs=1e-12)


def test_hand_computed_average_precision():
    # Defects 0.9, 0.5; defect-free 0.7, 0.5, 0.1. At 0.9: P 1, R ½; at 0.5 (a tie with a
    # defect-free pixel): TP 2, FP 2 → P ½, R 1. AP = ½ · 1 + ½ · ½.
    anomaly_map = np.array([[0.9, 0.5, 0.7, 0.5, 0.1]], np.float32)
    mask = np.array([[True, True, False, False, False]])
    got = evaluate_arrays([anomaly_map], [mask])
    assert got.p_ap == pytest.approx(0.75)
    assert got.oracle.pixel_f1_max == pytest.approx(2 / 3)  # at 0.9: 2·1 / (2 + 0 + 1)


@pytest.mark.parametrize(("seed", "levels"), [(0, None), (1, None), (100, 4), (101, 4), (102, 8)])
def test_absolute_bins_match_brute_force_with_nulls(seed, levels):
    maps, masks = random_case(seed, n_images=3, levels=levels, size=(6, 16))
    # one region of 70 px: the bin "<=64" holds only some regions
    maps[1], masks[1] = np.resize(maps[1], (7, 12)), np.zeros((7, 12), bool)
    masks[1][:7, :10] = True
    expected = plain_aupro_absolute(maps, masks)
    got = evaluate_arrays(maps, masks).aupro_abs
    for limit in FPR_LIMITS:
        for name in ABSOLUTE_BINS:
            e, g = expected[limit][name], got[limit][name]
            assert (e is None) == (g is None), (limit, name)
            if e is not None:
                assert g == pytest.approx(e, abs=1e-9)


def test_absolute_bins_without_small_regions_are_null():
    mask = np.zeros((40, 40), bool)
    mask[:20, :20] = True  # one region of 400 px: not in "<=64" or "<=256"
    maps = [np.random.default_rng(0).random((40, 40)).astype(np.float32)]
    got = evaluate_arrays(maps, [mask]).to_json_dict()["aupro_abs"]["0.3"]
    assert got["<=64"] is None and got["<=256"] is None
    assert got["<=1024"] == got["<=4096"] == got["all"] is not None


# ---- image figures and decisions ----------------------------------------------------------------


def test_image_f1_max_with_ties_against_every_threshold():
    rng = np.random.default_rng(4)
    scores = np.round(rng.random(40) * 5)
    labels = rng.random(40) > 0.6
    expected = plain_f1_max(scores[~labels], scores[labels])
    assert image_f1_max(scores, labels) == pytest.approx(expected, abs=1e-12)
    assert image_f1_max([1.0, 2.0], [False, False]) is None


def test_image_decisions_by_hand():
    said = [True, True, False, False, True]
    truth = [True, False, True, False, False]
    got = ImageDecisions.from_verdicts(said, truth)
    assert got.precision == pytest.approx(1 / 3) and got.recall == pytest.approx(1 / 2)
    assert got.f1 == pytest.approx(2 / 5) and got.false_alarm_rate == pytest.approx(2 / 3)
    nothing = ImageDecisions.from_verdicts([False, False], [False, False])
    assert nothing.precision is None and nothing.recall is None and nothing.f1 is None
    assert nothing.false_alarm_rate == 0.0


def test_seg_f1_and_verdicts_in_the_evaluator_against_plain_counts():
    maps, masks = random_case(7, n_images=6)
    rng = np.random.default_rng(1)
    predicted = [m > 0.7 for m in maps]
    verdicts = [bool(rng.random() > 0.5) for _ in maps]
    evaluator = StreamingEvaluator(n_images=len(maps))
    for m, k in zip(maps, masks, strict=True):
        evaluator.add_defects(m, k)
    for m, k, p, v in zip(maps, masks, predicted, verdicts, strict=True):
        evaluator.add(m, k, verdict=v, predicted_mask=p)
    got = evaluator.result()
    every_p, every_k = (np.concatenate([a.ravel() for a in x]) for x in (predicted, masks))
    tp = np.sum(every_p & every_k)
    expected = 2 * tp / (2 * tp + np.sum(every_p & ~every_k) + np.sum(~every_p & every_k))
    assert got.decisions is not None
    assert got.decisions.seg_f1 == pytest.approx(expected)
    labels = [bool(k.any()) for k in masks]
    assert got.decisions.image == ImageDecisions.from_verdicts(verdicts, labels)
    data = got.to_json_dict()["decisions"]
    assert set(data) == {"image", "seg_f1"}
    assert set(data["image"]) == {"precision", "recall", "f1", "false_alarm_rate"}
    assert "SegF1" in format_table(got)


def test_no_decisions_unless_every_image_has_both():
    maps, masks = random_case(8, n_images=3)
    evaluator = StreamingEvaluator()
    for m, k in zip(maps, masks, strict=True):
        evaluator.add_defects(m, k)
    for i, (m, k) in enumerate(zip(maps, masks, strict=True)):
        evaluator.add(m, k, verdict=True, predicted_mask=m > 0.5 if i else None)
    got = evaluator.result()
    assert got.decisions is None and "decisions" not in got.to_json_dict()


# ---- AUPIMO -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "levels"), CASES)
@pytest.mark.parametrize("bounds", [(0.01, 0.3), (0.05, 0.2), (1e-5, 1e-4)])
def test_aupimo_against_a_plain_implementation(seed, levels, bounds):
    maps, masks = random_case(seed, n_images=6, levels=levels)
    expected = plain_aupimo(maps, masks, *bounds)
    got = evaluate_arrays(maps, masks, aupimo_fpr_bounds=bounds).aupimo
    assert set(got.per_image) == set(expected)
    for key, value in expected.items():
        assert got.per_image[key] == pytest.approx(value, abs=1e-12), key
    if expected:
        assert got.mean == pytest.approx(np.mean(list(expected.values())), abs=1e-12)
    else:
        assert got.mean is None


def test_aupimo_pruned_pool_is_bit_identical(monkeypatch):
    from l2bt.metrics import aupimo

    maps, masks = random_case(21, n_images=12, levels=50, size=(20, 40))
    kept_all = evaluate_arrays(maps, masks, aupimo_fpr_bounds=(0.01, 0.05)).aupimo
    monkeypatch.setattr(aupimo, "POOL_MIN_PRUNE", 1)
    monkeypatch.setattr(aupimo, "PIXELS_PER_STEP", 3)
    pruned = evaluate_arrays(maps, masks, aupimo_fpr_bounds=(0.01, 0.05)).aupimo
    assert pruned == kept_all and kept_all.per_image


@pytest.mark.parametrize("min_prune", [1, 7, 1 << 10])
def test_normal_pool_against_brute_force(monkeypatch, min_prune):
    """The pool's shared FPR, however its images' tops were merged and pruned, equals
    counting every normal pixel, wherever it is below U (and is at least U elsewhere)."""
    from l2bt.metrics import aupimo

    monkeypatch.setattr(aupimo, "POOL_MIN_PRUNE", min_prune)
    rng = np.random.default_rng(min_prune)
    images = [
        np.round(rng.random(int(rng.choice([30, 57, 200]))) * 300)  # ties, 3 areas
        for _ in range(25)
    ]
    upper = 0.05
    pool = aupimo.NormalPool(len(images), upper)
    for values in images:
        pool.add(values)
    thresholds = np.unique(np.concatenate(images))
    for strict in (True, False):
        got = pool.shared_fpr(thresholds, strict)
        expected = np.array(
            [np.mean([np.mean(v > t if strict else v >= t) for v in images]) for t in thresholds]
        )
        below = expected < upper
        assert below.sum() > 10  # the case reaches well inside the range
        np.testing.assert_allclose(got[below], expected[below], rtol=1e-12)
        assert np.all(got[~below] >= upper * (1 - 1e-9))


def reference_case(scale=1.0):
    """The public reference's case (anomalib tests/unit/metrics/pimo/test_pimo.py): one
    normal and two anomalous 1000 × 1000 maps, scores 1..7 with counts 900 k, 90 k, …, 1;
    anomalous 1 is all defect, anomalous 2's defect is the 100 k highest pixels."""
    flat = np.ones(1_000_000, np.float32)
    for top in (100_000, 10_000, 1_000, 100, 10, 1):
        flat[:top] += 1
    anomaly_map = (scale * flat).reshape(1000, 1000)  # (H, W)
    normal = np.zeros((1000, 1000), bool)
    whole = np.ones((1000, 1000), bool)
    top = np.zeros(1_000_000, bool)
    top[:100_000] = True
    return [anomaly_map] * 3, [normal, whole, top.reshape(1000, 1000)]


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_aupimo_on_the_public_reference_case(scale):
    maps, masks = reference_case(scale)
    got = evaluate_arrays(maps, masks)  # bounds 1e-5 .. 1e-4
    assert got.aupimo.per_image["1"] == pytest.approx((1e-5 + 1e-4) / 2, rel=1e-9)
    assert got.aupimo.per_image["2"] == pytest.approx((1e-4 + 1e-3) / 2, rel=1e-9)
    assert set(got.aupimo.per_image) == {"1", "2"}  # the normal image has none
    wide = evaluate_arrays(maps, masks, aupimo_fpr_bounds=(1e-3, 1e-1)).aupimo.per_image
    assert wide["1"] == pytest.approx(((1e-3 + 1e-2) / 2 + (1e-2 + 1e-1) / 2) / 2, rel=1e-9)
    assert wide["2"] == pytest.approx(((1e-2 + 1e-1) / 2 + (1e-1 + 1.0) / 2) / 2, rel=1e-9)
    top = evaluate_arrays(maps, masks, aupimo_fpr_bounds=(1e-1, 1.0)).aupimo.per_image
    assert top["1"] == pytest.approx((0.1 + 1.0) / 2, rel=1e-9)
    assert top["2"] == pytest.approx(1.0, rel=1e-9)


def test_aupimo_without_normal_images_is_null():
    maps, masks = random_case(3, n_images=2)
    masks = [np.ones_like(k) for k in masks]
    got = evaluate_arrays(maps, masks).to_json_dict()["aupimo"]
    assert got == {"mean": None, "per_image": {}}


# ---- parallel counting --------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize("capacity", [5, 37, 500])
@pytest.mark.parametrize("piece", [1, 4, 1 << 14])
def test_parallel_counting_is_bit_identical(monkeypatch, workers, capacity, piece):
    from l2bt.metrics import cells

    monkeypatch.setattr(cells, "BUFFER_MIN", capacity)
    monkeypatch.setattr(cells, "BUFFER_MAX", capacity)
    monkeypatch.setattr(cells, "PIECE_EDGES", piece)
    rng = np.random.default_rng(workers * capacity + piece)
    edges = np.unique(np.round(rng.random(300) * 60).astype(np.float32))[::-1]  # few: ties
    batches = [
        np.round(rng.random(rng.integers(0, 900)) * 70).astype(np.float32) for _ in range(12)
    ]
    sequential, parallel = CellCounter(edges), ParallelCellCounter(edges, workers)
    for values in batches:
        sequential.add(values)
        parallel.add(values)
    assert parallel.total == sequential.total
    assert np.array_equal(parallel.counts(), sequential.counts())


@pytest.mark.parametrize("workers", [2, 4])
def test_parallel_evaluation_is_bit_identical(monkeypatch, workers):
    from l2bt.metrics import cells

    monkeypatch.setattr(cells, "BUFFER_MIN", 64)
    monkeypatch.setattr(cells, "BUFFER_MAX", 64)
    maps, masks = random_case(31, n_images=10, levels=6, size=(10, 30))
    maps[3] = maps[3].astype(np.float64) + 1e-12  # a wider dtype midway
    one = evaluate_arrays(maps, masks).to_json_dict()
    assert evaluate_arrays(maps, masks, workers=workers).to_json_dict() == one


def test_a_worker_error_reaches_the_caller(monkeypatch):
    from l2bt.metrics import cells, parallel

    def broken(*args, **kwargs):
        raise MemoryError("no room")

    monkeypatch.setattr(cells, "BUFFER_MIN", 4)
    monkeypatch.setattr(cells, "BUFFER_MAX", 4)
    monkeypatch.setattr(parallel.cells, "count_sorted", broken)
    counter = ParallelCellCounter(np.array([2.0, 1.0], np.float32), 2)
    with pytest.raises(MemoryError):
        for _ in range(10):
            counter.add(np.arange(5, dtype=np.float32))
        counter.counts()


def test_pixel_figures_swept_in_chunks_change_nothing(monkeypatch):
    from l2bt.metrics import precision_recall

    maps, masks = random_case(104, levels=4)
    whole = evaluate_arrays(maps, masks)
    monkeypatch.setattr(precision_recall, "EDGE_CHUNK", 2)
    chunked = evaluate_arrays(maps, masks)
    assert chunked.p_ap == pytest.approx(whole.p_ap, abs=1e-15)
    assert chunked.oracle == whole.oracle


@pytest.mark.parametrize("workers", [1, 2])
def test_counts_widened_to_int64_midway_change_nothing(monkeypatch, workers):
    from l2bt.metrics import cells

    maps, masks = random_case(41, n_images=8, levels=5)
    narrow = evaluate_arrays(maps, masks, workers=workers).to_json_dict()
    monkeypatch.setattr(cells, "INT32_COUNTS", 100)
    monkeypatch.setattr(cells, "BUFFER_MIN", 30)
    monkeypatch.setattr(cells, "BUFFER_MAX", 30)
    assert evaluate_arrays(maps, masks, workers=workers).to_json_dict() == narrow
    edges = np.array([0.6, 0.2], np.float32)
    counter = cells.CellCounter(edges) if workers == 1 else ParallelCellCounter(edges, 2)
    for _ in range(5):
        counter.add(np.linspace(0, 1, 40, dtype=np.float32))
    counts = counter.counts()
    assert counts.dtype == np.int64 and counts.sum() == 200
