"""The certified-run coreset against the one-pick-at-a-time reference: the same picks."""

import pytest
import torch

from l2bt.methods.coreset import code_scale, greedy_coreset, greedy_coreset_reference, quantize


def integer_points(n: int, dim: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    """Small integer coordinates: every distance is exact in floating point, so ties and
    duplicates are exact ties for both implementations."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 4, (n, dim), generator=generator).to(dtype)


def assert_same_selection(
    points: torch.Tensor, size: int, seed: int, rtol: float = 0.0, **options
) -> None:
    """Same picks; radii equal (exact arithmetic) or within `rtol` (summation order)."""
    expected = greedy_coreset_reference(points, size, seed=seed)
    got = greedy_coreset(points, size, seed=seed, **options)
    assert got.indices.tolist() == expected.indices.tolist()
    assert torch.allclose(got.radii, expected.radii, rtol=rtol, atol=0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,dim", [(1, 3), (2, 1), (7, 2), (97, 3), (257, 5), (601, 4)])
@pytest.mark.parametrize("candidates,rows_per_block", [(1, 16), (2, 7), (5, 64), (64, 4096)])
def test_same_picks_as_the_reference_with_ties_and_duplicates(
    dtype, n, dim, candidates, rows_per_block
):
    points = integer_points(n, dim, seed=n * dim, dtype=dtype)
    for size in (1, n // 3 + 1, n, n + 7):  # size ≥ N: every point, until all are covered
        assert_same_selection(
            points, size, seed=size, candidates=candidates, rows_per_block=rows_per_block
        )


@pytest.mark.parametrize("seed", range(4))
def test_same_picks_as_the_reference_on_gaussian_points(seed):
    generator = torch.Generator().manual_seed(seed)
    n = 1500 + 37 * seed  # not a multiple of any block size
    points = torch.randn(n, 128, generator=generator)
    assert_same_selection(points, n // 5, seed, rtol=1e-5, candidates=64, rows_per_block=500)


def test_duplicates_of_one_point_stop_after_one_pick():
    points = torch.ones(50, 4)
    got = greedy_coreset(points, 10, seed=2)
    assert len(got.indices) == 1 and got.covering_radius == 0.0


def clustered_points(dtype: torch.dtype, integer: bool) -> torch.Tensor:
    """2,000 points in 40 well-separated clusters of 16-d points."""
    generator = torch.Generator().manual_seed(0)
    if integer:  # exact arithmetic in float32 too: coordinates ≤ 52, squared norms < 2^24
        centres = torch.randint(-50, 51, (40, 16), generator=generator)
        offsets = torch.randint(-2, 3, (2000, 16), generator=generator)
    else:
        centres = torch.randn(40, 16, generator=generator) * 100
        offsets = torch.randn(2000, 16, generator=generator)
    return (centres[torch.arange(2000) % 40] + offsets).to(dtype)


def test_clustered_points_take_runs_of_many_picks(monkeypatch):
    """One run certifies many picks, so the points are read far fewer times than once
    per pick; the picks are still the reference's."""
    import l2bt.methods.coreset as coreset

    points = clustered_points(torch.float32, integer=True)
    updates = []
    original = coreset._update_nearest

    def counting(points, norms, picks, nearest, rows_per_block):
        updates.append(len(picks))
        original(points, norms, picks, nearest, rows_per_block)

    monkeypatch.setattr(coreset, "_update_nearest", counting)
    got = greedy_coreset(points, 300, seed=0)
    assert len(got.indices) == 300 and len(updates) < 30
    monkeypatch.undo()
    assert_same_selection(points, 300, seed=0)


def test_same_picks_in_float64_where_float32_rounding_decides():
    """Clusters far from the origin: ‖x‖² + ‖c‖² − 2x·c cancels ~14 bits, so in float32
    some picks are decided by rounding, for the reference as for any other summation
    order. In float64 they are not, and the two selections agree."""
    assert_same_selection(clustered_points(torch.float64, integer=False), 300, seed=0, rtol=1e-9)


def test_codes_are_the_rounded_values_on_one_scale():
    values = torch.tensor([[-2.0, -0.004, 0.0], [0.006, 1.0, 2.0]])
    scale = code_scale(float(values.abs().max()))
    codes = quantize(values, scale)
    assert codes.dtype == torch.int8 and scale == 2.0 / 127
    assert codes.tolist() == [[-127, 0, 0], [0, 64, 127]]
    assert code_scale(0.0) == 1.0


def clustered_projection(n: int, seed: int) -> torch.Tensor:
    """Projected-descriptor-like points: 50 clusters in 128-d, as PatchCore's are."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(50, 128, generator=generator) * 3
    return centres[torch.randint(50, (n,), generator=generator)] + 0.3 * torch.randn(
        n, 128, generator=generator
    )


@pytest.mark.slow
def test_on_8bit_codes_the_runs_pick_exactly_the_reference_points_at_scale():
    """On float32 points of this size the two summation orders part ways after a few
    hundred picks (two candidates within rounding); on 8-bit codes every distance is an
    exact integer, so all 1,200 picks and radii are the reference's."""
    points = clustered_projection(30_000, seed=0)
    codes = quantize(points, code_scale(float(points.abs().max())))
    expected = greedy_coreset_reference(codes.float(), 1200, seed=0)
    got = greedy_coreset(codes, 1200, seed=0)
    assert got.indices.tolist() == expected.indices.tolist()
    assert torch.equal(got.radii, expected.radii)
    assert len(set(got.indices.tolist())) == 1200


def test_integer_codes_give_the_same_selection_as_their_float32_values():
    codes = quantize(clustered_projection(3_000, seed=1), 0.05)
    a, b = greedy_coreset(codes, 400, seed=3), greedy_coreset(codes.float(), 400, seed=3)
    assert a.indices.tolist() == b.indices.tolist() and torch.equal(a.radii, b.radii)
