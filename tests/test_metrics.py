"""The streaming metrics against an independent brute force: every threshold, plain loops."""

import itertools

import numpy as np
import pytest
from scipy import ndimage

from l2bt.metrics import (
    FPR_LIMITS,
    SIZE_BINS,
    EvaluationResult,
    PixelEvaluator,
    area_under,
    auroc,
    robustness,
)


def brute_force(maps, masks):
    """AUPRO per (limit, bin) and P-AUROC by definition, threshold by threshold."""
    normal = np.concatenate([m[~k] for m, k in zip(maps, masks, strict=True)]).astype(float)
    regions = []
    for m, k in zip(maps, masks, strict=True):
        labels, n = ndimage.label(k, structure=np.ones((3, 3)))
        regions += [m[labels == i].astype(float) for i in range(1, n + 1)]
    areas = np.array([r.size for r in regions], float)
    out = {limit: dict.fromkeys(SIZE_BINS) for limit in FPR_LIMITS}
    if regions and normal.size:
        q = np.quantile(areas, [0.25, 0.5, 0.75])
        bins = {"q1": areas <= q[0], "q2": areas <= q[1], "q3": areas <= q[2],
                "all": np.ones(len(regions), bool)}
        thresholds = sorted(set(np.concatenate([normal, *regions]).tolist()), reverse=True)
        for name, members in bins.items():
            chosen = [r for r, keep in zip(regions, members, strict=True) if keep]
            points = [(0.0, 0.0)] + [
                (float(np.mean(normal >= t)), float(np.mean([np.mean(r >= t) for r in chosen])))
                for t in thresholds]
            for limit in FPR_LIMITS:
                out[limit][name] = integrate(points, limit) / limit
    defect = np.concatenate(regions) if regions else np.zeros(0)
    p_auroc = None
    if defect.size and normal.size:
        wins = sum((d > n) + 0.5 * (d == n) for d in defect for n in normal)
        p_auroc = wins / (defect.size * normal.size)
    return out, p_auroc


def integrate(points, limit):
    area = 0.0
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x1 <= limit:
            area += (x1 - x0) * (y0 + y1) / 2
        else:
            if x0 < limit:
                y = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
                area += (limit - x0) * (y0 + y) / 2
            break
    return area


def fast(maps, masks):
    evaluator = PixelEvaluator()
    for m, k in zip(maps, masks, strict=True):
        if k.any():
            evaluator.add_defects(m, k)
    for m, k in zip(maps, masks, strict=True):
        evaluator.add_normal(m, k)
    return evaluator.result()


def random_case(seed, n_images=4, levels=None):
    rng = np.random.default_rng(seed)
    maps, masks = [], []
    for _ in range(n_images):
        h, w = rng.integers(3, 12, size=2)
        m = rng.random((h, w))
        if levels:  # few distinct values: many ties between and across pixels
            m = np.round(m * levels) / levels
        k = np.zeros((h, w), bool)
        for _ in range(rng.integers(0, 4)):
            y, x = rng.integers(0, h), rng.integers(0, w)
            k[y:y + rng.integers(1, 4), x:x + rng.integers(1, 5)] = True
            m[k] += rng.random() * 0.3 if levels is None else 0
        maps.append(m.astype(np.float32))
        masks.append(k)
    return maps, masks


def assert_matches(maps, masks):
    expected, expected_p = brute_force(maps, masks)
    got = fast(maps, masks)
    for limit in FPR_LIMITS:
        for name in SIZE_BINS:
            e, g = expected[limit][name], got.aupro[limit][name]
            assert (e is None) == (g is None), (limit, name, e, g)
            if e is not None:
                assert g == pytest.approx(e, abs=1e-9), (limit, name)
    if expected_p is None:
        assert got.p_auroc is None
    else:
        assert got.p_auroc == pytest.approx(expected_p, abs=1e-9)


@pytest.mark.parametrize("seed", range(12))
def test_random_maps_match_brute_force(seed):
    assert_matches(*random_case(seed))


@pytest.mark.parametrize("seed", range(8))
def test_heavy_ties_match_brute_force(seed):
    assert_matches(*random_case(100 + seed, levels=4))


def test_all_scores_equal():
    maps = [np.full((5, 6), 0.5, np.float32) for _ in range(3)]
    masks = [np.zeros((5, 6), bool) for _ in range(3)]
    masks[1][1:3, 1:4] = True
    assert_matches(maps, masks)
    # One sloped segment from (0, 0) to (1, 1): AUPRO@L = (L² / 2) / L = L / 2.
    got = fast(maps, masks)
    assert got.aupro[0.3]["all"] == pytest.approx(0.15)
    assert got.aupro[0.01]["all"] == pytest.approx(0.005)


def test_single_region_and_images_without_defects():
    rng = np.random.default_rng(5)
    maps = [rng.random((7, 9)).astype(np.float32) for _ in range(3)]
    masks = [np.zeros((7, 9), bool) for _ in range(3)]
    masks[2][2:5, 3:6] = True
    assert_matches(maps, masks)
    got = fast(maps, masks)
    assert got.n_regions == 1 and got.size_quantiles_px == (9.0, 9.0, 9.0)


def test_no_defects_at_all_gives_nulls_not_crashes():
    maps = [np.random.default_rng(0).random((4, 4)).astype(np.float32)]
    got = fast(maps, [np.zeros((4, 4), bool)])
    assert got.n_regions == 0 and got.size_quantiles_px is None and got.p_auroc is None
    assert all(got.aupro[limit][name] is None for limit in FPR_LIMITS for name in SIZE_BINS)
    result = EvaluationResult.combine("x", 1, None, got)
    assert result.to_json_dict()["robustness"]["0.3"] == {"ratio": None, "rho": None}


def test_hand_computed_example():
    # Normal pixels 0.1, 0.4; one region {0.35, 0.8}. Curve (0,0)→(0,.5)→(.5,.5)→(.5,1)→(1,1).
    maps = [np.array([[0.1, 0.4, 0.35, 0.8]], np.float32)]
    masks = [np.array([[False, False, True, True]])]
    got = fast(maps, masks)
    assert got.aupro[0.3]["all"] == pytest.approx(0.5)
    assert got.aupro[0.01]["all"] == pytest.approx(0.5)
    assert got.p_auroc == pytest.approx(0.75)  # 3 of the 4 (defect, normal) pairs ordered


def test_eight_connectivity_and_cumulative_bins():
    # Two diagonal pixels form ONE region; a separate 3x3 block is a second, larger one.
    mask = np.zeros((8, 8), bool)
    mask[0, 0] = mask[1, 1] = True
    mask[4:7, 4:7] = True
    got = fast([np.random.default_rng(1).random((8, 8)).astype(np.float32)], [mask])
    assert got.n_regions == 2
    q1, q2, q3 = got.size_quantiles_px
    assert (q1, q2, q3) == pytest.approx((3.75, 5.5, 7.25))


def test_area_under_interpolates_at_the_limit():
    fpr, pro = np.array([0.0, 0.2, 0.4]), np.array([0.0, 1.0, 1.0])
    assert area_under(fpr, pro, 0.3) == pytest.approx(0.1 + 0.1)
    # A vertical step at the limit counts only up to the point reached.
    assert area_under(np.array([0.0, 0.3, 0.3]), np.array([0.0, 0.0, 1.0]), 0.3) == 0.0


def test_image_auroc_with_ties_against_pairs():
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(30) * 5)
    labels = rng.random(30) > 0.5
    pos, neg = scores[labels], scores[~labels]
    expected = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert auroc(scores, labels) == pytest.approx(expected, abs=1e-12)
    assert auroc([1.0, 2.0], [True, True]) is None


def test_robustness_figures():
    r = robustness({"q1": 0.4, "q2": 0.6, "q3": 0.7, "all": 0.8})
    assert r.ratio == pytest.approx(0.5) and r.rho == pytest.approx(0.625 * 0.5)
    assert robustness({"q1": None, "q2": 0.6, "q3": 0.7, "all": 0.8}).rho is None


def test_defects_must_come_first():
    evaluator = PixelEvaluator()
    evaluator.add_normal(np.zeros((2, 2), np.float32), np.zeros((2, 2), bool))
    with pytest.raises(RuntimeError):
        evaluator.add_defects(np.zeros((2, 2), np.float32), np.ones((2, 2), bool))


def test_float64_maps_after_float32_ones_are_not_rounded():
    # A defect-free pixel just above a float32 defect score must stay above it.
    defect = np.float32(0.5)
    above = np.nextafter(np.float64(defect), 1.0)  # not representable in float32
    maps = [np.array([[defect, 0.0]], np.float32), np.array([[above, 0.0]], np.float64)]
    masks = [np.array([[True, False]]), np.array([[False, False]])]
    assert_matches(maps, masks)


@pytest.mark.parametrize("seed", range(6))
def test_cell_counts_against_plain_counting(seed):
    from l2bt.metrics.aupro import _add_cell_counts

    rng = np.random.default_rng(seed)
    values = np.round(rng.random(300) * 8).astype(np.float32)  # many ties, values on edges
    edges = np.unique(np.round(rng.random(seed + 1) * 8).astype(np.float32))[::-1]
    if seed == 0:
        edges = edges[:0]  # no defect pixels at all: one cell holds everything
    expected = [np.sum(values > edges[0]) if edges.size else values.size]
    for j, edge in enumerate(edges):
        expected.append(np.sum(values == edge))
        below = edges[j + 1] if j + 1 < edges.size else -np.inf
        expected.append(np.sum((values < edge) & (values > below)))
    cells = np.full(2 * edges.size + 1, 7, np.int64)  # counts add to what is there
    _add_cell_counts(cells, values, edges)
    assert (cells - 7).tolist() == expected


@pytest.mark.parametrize("chunk", [1, 2, 7])
def test_integration_in_chunks_changes_nothing(monkeypatch, chunk):
    from l2bt.metrics import aupro

    monkeypatch.setattr(aupro, "AREA_CHUNK", chunk)
    assert_matches(*random_case(7))
    assert_matches(*random_case(107, levels=4))
