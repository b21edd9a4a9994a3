"""The streaming metrics against an independent brute force (every threshold, plain loops)
and against cases integrated by hand."""

import tracemalloc

import numpy as np
import pytest
from scipy import ndimage

from l2bt.metrics import (
    FPR_LIMITS,
    SIZE_BINS,
    StreamingEvaluator,
    area_under,
    auroc,
    evaluate_arrays,
    format_table,
    robustness,
)
from metric_references import random_case, trapezoid_up_to

# ---- the reference: SPEC §6 read literally ---------------------------------------------------


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
        bins = {
            "q1": areas <= q[0],
            "q2": areas <= q[1],
            "q3": areas <= q[2],
            "all": np.ones(len(regions), bool),
        }
        thresholds = sorted(set(np.concatenate([normal, *regions]).tolist()), reverse=True)
        for name, members in bins.items():
            chosen = [r for r, keep in zip(regions, members, strict=True) if keep]
            points = [(0.0, 0.0)] + [
                (float(np.mean(normal >= t)), float(np.mean([np.mean(r >= t) for r in chosen])))
                for t in thresholds
            ]
            for limit in FPR_LIMITS:
                out[limit][name] = trapezoid_up_to(points, limit) / limit
    defect = np.concatenate(regions) if regions else np.zeros(0)
    p_auroc = None
    if defect.size and normal.size:
        wins = sum((d > n) + 0.5 * (d == n) for d in defect for n in normal)
        p_auroc = wins / (defect.size * normal.size)
    return out, p_auroc


def pairwise_auroc(scores, labels):
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    return np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])


def assert_matches(maps, masks):
    expected, expected_p = brute_force(maps, masks)
    got = evaluate_arrays(maps, masks)
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
    return got


# ---- against the brute force ----------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_random_maps_match_brute_force(seed):
    assert_matches(*random_case(seed))


@pytest.mark.parametrize("seed", range(8))
def test_heavy_ties_match_brute_force(seed):
    assert_matches(*random_case(100 + seed, levels=4))


def test_many_images_with_few_pixels_each():
    # More distinct defect scores than defect-free pixels per image: the other counting path.
    maps, masks = random_case(55, n_images=14)
    assert_matches(maps, masks)


def test_all_scores_equal():
    maps = [np.full((5, 6), 0.5, np.float32) for _ in range(3)]
    masks = [np.zeros((5, 6), bool) for _ in range(3)]
    masks[1][1:3, 1:4] = True
    got = assert_matches(maps, masks)
    # One sloped segment from (0, 0) to (1, 1): AUPRO@L = (L² / 2) / L = L / 2.
    assert got.aupro[0.3]["all"] == pytest.approx(0.15)
    assert got.aupro[0.01]["all"] == pytest.approx(0.005)
    assert got.p_auroc == pytest.approx(0.5)


def test_single_region_and_images_without_defects():
    rng = np.random.default_rng(5)
    maps = [rng.random((7, 9)).astype(np.float32) for _ in range(3)]
    masks = [np.zeros((7, 9), bool) for _ in range(3)]
    masks[2][2:5, 3:6] = True
    got = assert_matches(maps, masks)
    assert got.n_regions == 1 and got.size_quantiles_px == (9.0, 9.0, 9.0)


def test_float64_maps_after_float32_ones_are_not_rounded():
    # A defect-free pixel just above a float32 defect score must stay above it.
    defect = np.float32(0.5)
    above = np.nextafter(np.float64(defect), 1.0)  # not representable in float32
    maps = [np.array([[defect, 0.0]], np.float32), np.array([[above, 0.0]], np.float64)]
    masks = [np.array([[True, False]]), np.array([[False, False]])]
    assert_matches(maps, masks)


# ---- integrated by hand ---------------------------------------------------------------------


def test_hand_computed_curve_with_interpolation_at_the_limit():
    # One region {0.8, 0.6}; ten defect-free pixels {0.7, 0.6 ×3, 0 ×6}. Thresholds:
    # 0.8 → (0, .5); 0.7 → (.1, .5); 0.6 → (.4, 1); 0 → (1, 1). At FPR .3 the sloped
    # segment is at PRO .5 + .5 · (.2 / .3) = 5/6.
    scores = [0.8, 0.6, 0.7, 0.6, 0.6, 0.6, 0, 0, 0, 0, 0, 0]
    anomaly_map = np.array([scores], np.float32)  # (1, 12)
    mask = np.zeros((1, 12), bool)
    mask[0, :2] = True
    got = evaluate_arrays([anomaly_map], [mask])
    assert got.aupro[0.3]["all"] == pytest.approx((0.1 * 0.5 + 0.2 * (0.5 + 5 / 6) / 2) / 0.3)
    assert got.aupro[0.1]["all"] == pytest.approx(0.5)
    assert got.aupro[0.01]["all"] == pytest.approx(0.5)
    # Pairs: 0.8 beats all ten; 0.6 beats six, ties three, loses one.
    assert got.p_auroc == pytest.approx((10 + 6 + 1.5) / 20)


def test_hand_computed_size_bins_and_robustness():
    # Regions of 1, 2, 3 and 4 px on one row, one pixel apart; quartiles 1.75, 2.5, 3.25.
    # Regions of 1 and 3 px score 1 (found first), 2 and 4 px score 0; the four
    # defect-free pixels score 0.5. PRO jumps to its final-but-one value at FPR 0.
    row = ["d1", "n", "d2", "d2", "n", "d3", "d3", "d3", "n", "d4", "d4", "d4", "d4", "n"]
    value = {"n": 0.5, "d1": 1.0, "d2": 0.0, "d3": 1.0, "d4": 0.0}
    anomaly_map = np.array([[value[c] for c in row]], np.float32)
    mask = np.array([[c != "n" for c in row]])
    got = evaluate_arrays([anomaly_map], [mask])
    assert got.size_quantiles_px == (1.75, 2.5, 3.25) and got.n_regions == 4
    expected = {"q1": 1.0, "q2": 0.5, "q3": 2 / 3, "all": 0.5}
    for limit in FPR_LIMITS:
        assert got.aupro[limit] == pytest.approx(expected)
        assert got.robustness[limit].ratio == pytest.approx(2.0)
        assert got.robustness[limit].rho == pytest.approx((1 + 0.5 + 2 / 3 + 0.5) / 4 * 2)
    assert got.p_auroc == pytest.approx(4 * 4 / (10 * 4))


def test_eight_connectivity_makes_one_region_of_diagonal_pixels():
    mask = np.zeros((8, 8), bool)
    mask[0, 0] = mask[1, 1] = True  # one region, not two
    mask[4:7, 4:7] = True
    got = evaluate_arrays([np.random.default_rng(1).random((8, 8)).astype(np.float32)], [mask])
    assert got.n_regions == 2
    assert got.size_quantiles_px == pytest.approx((3.75, 5.5, 7.25))  # areas 2 and 9


def test_area_under_interpolates_at_the_limit():
    fpr, pro = np.array([0.0, 0.2, 0.4]), np.array([0.0, 1.0, 1.0])
    assert area_under(fpr, pro, 0.3) == pytest.approx(0.1 + 0.1)
    # A vertical step at the limit counts only up to the point reached.
    assert area_under(np.array([0.0, 0.3, 0.3]), np.array([0.0, 0.0, 1.0]), 0.3) == 0.0


@pytest.mark.parametrize("chunk", [1, 2, 7])
def test_integration_in_chunks_changes_nothing(monkeypatch, chunk):
    from l2bt.metrics import aupro

    monkeypatch.setattr(aupro, "AREA_CHUNK", chunk)
    assert_matches(*random_case(7))
    assert_matches(*random_case(107, levels=4))


@pytest.mark.parametrize("capacity", [1, 3, 50])
def test_buffered_counting_in_small_batches_changes_nothing(monkeypatch, capacity):
    from l2bt.metrics import cells

    monkeypatch.setattr(cells, "BUFFER_MIN", capacity)
    monkeypatch.setattr(cells, "BUFFER_MAX", capacity)
    assert_matches(*random_case(8))
    assert_matches(*random_case(108, levels=4))
    test_float64_maps_after_float32_ones_are_not_rounded()


# ---- counting defect-free pixels into cells -------------------------------------------------


def plain_cell_counts(values, edges_desc):
    expected = [np.sum(values > edges_desc[0]) if edges_desc.size else values.size]
    for j, edge in enumerate(edges_desc):
        expected.append(np.sum(values == edge))
        below = edges_desc[j + 1] if j + 1 < edges_desc.size else -np.inf
        expected.append(np.sum((values < edge) & (values > below)))
    return expected


@pytest.mark.parametrize(
    ("n_values", "n_edges"), [(300, 0), (300, 1), (300, 6), (40, 9), (5, 60), (1, 3), (0, 4)]
)
def test_both_counting_paths_against_plain_counting(n_values, n_edges):
    from l2bt.metrics.cells import (
        _count_searching_edges,
        _count_searching_values,
        add_cell_counts,
    )

    rng = np.random.default_rng(n_values + n_edges)
    values = np.round(rng.random(n_values) * 8).astype(np.float32)  # ties, values on edges
    edges = np.unique(np.round(rng.random(n_edges) * 8, 1).astype(np.float32))[::-1]
    expected = plain_cell_counts(values, edges)
    paths = [add_cell_counts]
    if values.size:
        paths.append(lambda c, v, e: _count_searching_edges(c, np.sort(v), e[::-1]))
        if edges.size:
            paths.append(lambda c, v, e: _count_searching_values(c, np.sort(v), e[::-1]))
    for count in paths:
        cells = np.full(2 * edges.size + 1, 7, np.int64)  # counts add to what is there
        count(cells, values, edges)
        assert (cells - 7).tolist() == expected


# ---- undefined results, image scores, misuse -------------------------------------------------


def test_no_defects_at_all_gives_nulls_not_crashes():
    maps = [np.random.default_rng(0).random((4, 4)).astype(np.float32)]
    got = evaluate_arrays(maps, [np.zeros((4, 4), bool)], category="x")
    assert got.n_regions == 0 and got.size_quantiles_px is None and got.p_auroc is None
    assert got.i_auroc is None  # one label only
    data = got.to_json_dict()
    assert all(v is None for row in data["aupro"].values() for v in row.values())
    assert data["robustness"]["0.3"] == {"ratio": None, "rho": None}
    assert "—" in format_table(got)


def test_no_defect_free_pixels_gives_nulls():
    got = evaluate_arrays([np.ones((3, 3), np.float32)], [np.ones((3, 3), bool)])
    assert got.n_regions == 1 and got.p_auroc is None
    assert got.aupro[0.3]["all"] is None and got.robustness[0.3].rho is None


def test_image_scores_and_labels():
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(12) * 3)  # ties
    labels = [i % 3 == 0 for i in range(12)]
    evaluator = StreamingEvaluator()
    maps = [rng.random((4, 4)).astype(np.float32) for _ in range(12)]
    masks = [np.zeros((4, 4), bool) for _ in range(12)]
    for i in range(12):
        masks[i][1, 1] = labels[i]
        evaluator.add_defects(maps[i], masks[i])
    for i in range(12):
        evaluator.add(maps[i], masks[i], float(scores[i]))
    got = evaluator.result("toy")
    assert got.n_images == 12 and got.category == "toy"
    assert got.i_auroc == pytest.approx(pairwise_auroc(scores, labels), abs=1e-12)
    # Without scores: the map maximum.
    by_max = evaluate_arrays(maps, masks)
    assert by_max.i_auroc == pytest.approx(pairwise_auroc([m.max() for m in maps], labels))


def test_image_auroc_with_ties_against_pairs():
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(30) * 5)
    labels = rng.random(30) > 0.5
    assert auroc(scores, labels) == pytest.approx(pairwise_auroc(scores, labels), abs=1e-12)
    assert auroc([1.0, 2.0], [True, True]) is None


def test_robustness_figures():
    r = robustness({"q1": 0.4, "q2": 0.6, "q3": 0.7, "all": 0.8})
    assert r.ratio == pytest.approx(0.5) and r.rho == pytest.approx(0.625 * 0.5)
    assert robustness({"q1": None, "q2": 0.6, "q3": 0.7, "all": 0.8}).rho is None
    assert robustness({"q1": 0.0, "q2": 0.0, "q3": 0.0, "all": 0.0}).ratio is None


def test_passes_out_of_order_or_unequal_are_refused():
    evaluator = StreamingEvaluator()
    evaluator.add(np.zeros((2, 2), np.float32), np.zeros((2, 2), bool))
    with pytest.raises(RuntimeError, match="defects come first"):
        evaluator.add_defects(np.zeros((2, 2), np.float32), np.ones((2, 2), bool))
    skipped_pass_1 = StreamingEvaluator()
    skipped_pass_1.add(np.zeros((2, 2), np.float32), np.eye(2, dtype=bool))
    with pytest.raises(RuntimeError, match="same images"):
        skipped_pass_1.result()


def test_bad_arrays_are_refused():
    evaluator = StreamingEvaluator()
    with pytest.raises(ValueError, match="bool"):
        evaluator.add_defects(np.zeros((2, 2), np.float32), np.ones((2, 2), np.uint8))
    with pytest.raises(ValueError, match="shapes"):
        evaluator.add_defects(np.zeros((2, 3), np.float32), np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="finite"):
        evaluator.add_defects(np.full((2, 2), np.nan, np.float32), np.ones((2, 2), bool))


def test_memory_does_not_grow_with_defect_free_images():
    rng = np.random.default_rng(0)
    mask = np.zeros((100, 100), bool)
    mask[10:20, 10:30] = True
    evaluator = StreamingEvaluator()
    evaluator.add_defects(rng.random((100, 100)).astype(np.float32), mask)
    maps = [rng.random((100, 100)).astype(np.float32) for _ in range(40)]  # 40 KB each
    no_defect = np.zeros((100, 100), bool)
    evaluator.add(maps[0], no_defect)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for anomaly_map in maps[1:]:
        evaluator.add(anomaly_map, no_defect)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 39 * 200  # a few bytes per image (its score), never its pixels


def test_average_ranks_share_ties():
    from l2bt.metrics.auroc import average_ranks

    assert average_ranks(np.array([3.0, 1.0, 3.0, 2.0, 3.0])).tolist() == [4, 1, 4, 2, 4]
    rng = np.random.default_rng(9)
    values = np.round(rng.random(200) * 6)
    plain = [1 + np.sum(values < v) + (np.sum(values == v) - 1) / 2 for v in values]
    assert average_ranks(values).tolist() == plain


@pytest.mark.parametrize("piece", [1, 2, 5, 1 << 14])
@pytest.mark.parametrize("ratio", [0, 2, 10**6])  # 0: always search edges; 10**6: values
def test_counting_piece_by_piece_against_plain_counting(monkeypatch, piece, ratio):
    from l2bt.metrics import cells as engine

    monkeypatch.setattr(engine, "PIECE_EDGES", piece)
    monkeypatch.setattr(engine, "EDGE_SEARCH_RATIO", ratio)
    rng = np.random.default_rng(piece + ratio)
    for n_values, n_edges in [(400, 30), (30, 400), (0, 5), (7, 0), (50, 1)]:
        values = np.round(rng.random(n_values) * 40).astype(np.float32)  # ties, on edges
        edges = np.unique(np.round(rng.random(n_edges) * 40, 1).astype(np.float32))[::-1]
        cells = np.zeros(2 * edges.size + 1, np.int64)
        engine.add_cell_counts(cells, values, edges)
        assert cells.tolist() == plain_cell_counts(values, edges)
    assert_matches(*random_case(109, levels=4))


def test_defect_pixels_labelled_in_their_bounding_box_as_in_the_whole_mask():
    from l2bt.metrics.size_bins import label_defect_pixels, label_regions

    rng = np.random.default_rng(12)
    for _ in range(20):
        mask = rng.random((rng.integers(1, 30), rng.integers(1, 30))) > rng.uniform(0.5, 0.99)
        labels, count = label_regions(mask)
        got, got_count = label_defect_pixels(mask)
        assert got_count == count and np.array_equal(got, labels[mask])
