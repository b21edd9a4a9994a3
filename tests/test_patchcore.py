import itertools

import numpy as np
import pytest
import torch

from helpers import textured_image
from l2bt.methods.base import MethodSettings
from l2bt.methods.patchcore import PatchCore, greedy_coreset, nearest_distances


def brute_force_coreset(points: np.ndarray, size: int, first: int) -> list[int]:
    chosen = [first]
    for _ in range(1, size):
        gaps = [min(np.sum((p - points[c]) ** 2) for c in chosen) for p in points]
        chosen.append(int(np.argmax(gaps)))  # first index on ties, like torch.argmax
    return chosen


def plain_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, d), (m, d) -> (n, m) Euclidean distances from coordinate differences."""
    return (a[:, None, :] - b[None, :, :]).square().sum(-1).sqrt()


def covering_radius(points: torch.Tensor, chosen: torch.Tensor) -> float:
    return float(plain_distances(points, points[chosen]).min(dim=1).values.max())


@pytest.mark.parametrize("seed", range(5))
def test_coreset_matches_brute_force_greedy(seed):
    rng = np.random.default_rng(seed)
    points = rng.integers(0, 4, (40, 3)).astype(np.float64)  # duplicates and ties
    got = greedy_coreset(torch.from_numpy(points), 9, seed=seed)
    assert got.tolist() == brute_force_coreset(points, 9, int(got[0]))


def test_first_pick_is_seeded_and_size_is_capped():
    points = torch.randn(30, 4)
    assert torch.equal(greedy_coreset(points, 5, seed=3), greedy_coreset(points, 5, seed=3))
    assert len(greedy_coreset(points, 100, seed=0)) == 30


def test_covering_radius_never_grows_with_the_ratio():
    points = torch.randn(200, 5, dtype=torch.float64)
    radii = [covering_radius(points, greedy_coreset(points, k, seed=1))
             for k in (1, 5, 20, 60, 200)]
    assert all(a >= b for a, b in itertools.pairwise(radii))
    assert radii[-1] == 0.0


@pytest.mark.parametrize("n,m,chunk", [(1, 1, 1), (17, 33, 5), (50, 7, 64), (9, 100, 31)])
def test_nearest_distances_match_brute_force(n, m, chunk):
    generator = torch.Generator().manual_seed(n * m)
    queries = torch.randn(n, 6, generator=generator, dtype=torch.float64)
    bank = torch.randn(m, 6, generator=generator, dtype=torch.float64)
    queries[0] = bank[-1]  # identical to a bank point: distance 0
    expected = plain_distances(queries, bank).min(dim=1).values
    got = nearest_distances(queries, bank, chunk=chunk)
    # |q|² + |b|² − 2q·b cancels: float64 leaves about sqrt(eps)·|q| ≈ 1e-8 near zero.
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-7)
    assert got[0] < 1e-7


def test_patchcore_end_to_end_on_tiny_images(tmp_path):
    from PIL import Image

    paths = []
    for i, (h, w) in enumerate([(60, 45), (50, 70), (56, 56), (45, 60)]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(textured_image(h, w, seed=i)).save(paths[-1])
    settings = MethodSettings(teacher="dinov2_vits14", weights="random", image_size=56,
                              device="cpu", cache_dir=str(tmp_path / "cache"))
    method = PatchCore(settings, coreset_ratio=0.5)
    method.fit(paths, tmp_path / "work", progress=False)
    assert method.bank is not None and method.bank.shape == (round(0.5 * 4 * 16), 768)
    normal = textured_image(50, 70, seed=9)
    broken = normal.copy()
    broken[10:30, 20:45] = 255  # a bright defect
    out = method.predict_batch([normal, broken, textured_image(33, 41, seed=3)])
    assert [p.anomaly_map.shape for p in out] == [(50, 70), (50, 70), (33, 41)]
    assert all(np.isfinite(p.score) for p in out)
    assert out[1].score > out[0].score
    # A second fit with the same settings reloads the bank instead of rebuilding it.
    again = PatchCore(settings, coreset_ratio=0.5)
    again.fit([], tmp_path / "work", progress=False)
    assert torch.equal(again.bank, method.bank)


def test_the_bank_is_gathered_chunk_by_chunk_exactly(tmp_path):
    from l2bt.features import TrainFeatures

    rng = np.random.default_rng(0)
    early = rng.normal(size=(19, 3, 4, 8)).astype(np.float16)  # 19 images: chunks of 8, 8, 3
    features = TrainFeatures(early=early, late=early[..., ::-1].copy(), folder=tmp_path)
    method = PatchCore(MethodSettings(device="cpu"))
    everything = torch.cat(list(method._patch_chunks(features)))
    assert everything.shape == (19 * 12, 16)
    chosen = torch.tensor(sorted(rng.choice(19 * 12, 30, replace=False).tolist()))
    assert torch.equal(method._gather(features, chosen), everything[chosen])
