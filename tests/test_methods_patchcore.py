"""PatchCore: coreset and nearest neighbours against brute force, then fit/predict/reload."""

import itertools
import json

import numpy as np
import pytest
import torch
from PIL import Image

import l2bt.methods.patchcore as patchcore
from helpers import teacher_loaded_once, textured_image
from l2bt.config import TeacherConfig
from l2bt.errors import InputError
from l2bt.features import TrainFeatures
from l2bt.methods.artefacts import CONFIG_FILE
from l2bt.methods.base import MethodSettings
from l2bt.methods.coreset import greedy_coreset, random_projection
from l2bt.methods.nearest import nearest_distances, nearest_neighbours
from l2bt.methods.patchcore import BANK_FILE, PatchCore, patch_descriptors

# ---- brute-force references ------------------------------------------------------------------


def brute_force_coreset(points: np.ndarray, size: int, first: int) -> tuple[list[int], list[float]]:
    """Textbook k-center greedy from `first`: picks and covering radius after each pick,
    stopping once every point is covered at distance 0."""
    chosen, radii = [first], []
    while True:
        gaps = [min(np.sqrt(np.sum((p - points[c]) ** 2)) for c in chosen) for p in points]
        radii.append(max(gaps))
        if len(chosen) == size or radii[-1] == 0:
            return chosen, radii
        chosen.append(int(np.argmax(gaps)))  # first index on ties, like torch.argmax


def plain_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, d), (m, d) -> (n, m) Euclidean distances from coordinate differences."""
    return (a[:, None, :] - b[None, :, :]).square().sum(-1).sqrt()


def covering_radius(points: torch.Tensor, chosen: torch.Tensor) -> float:
    return float(plain_distances(points, points[chosen]).min(dim=1).values.max())


# ---- coreset ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_coreset_matches_brute_force_greedy_with_ties_and_duplicates(seed):
    rng = np.random.default_rng(seed)
    points = rng.integers(0, 4, (40, 3)).astype(np.float64)  # many duplicates and ties
    got = greedy_coreset(torch.from_numpy(points), 9, seed=seed)
    picks, radii = brute_force_coreset(points, 9, int(got.indices[0]))
    assert got.indices.tolist() == picks
    assert got.radii.tolist() == pytest.approx(radii, abs=1e-12)


def test_coreset_stops_once_every_point_is_covered():
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    got = greedy_coreset(points, 4, seed=0)
    assert sorted(points[got.indices].tolist()) == [[0.0, 0.0], [1.0, 0.0]]
    assert got.covering_radius == 0.0


def test_first_pick_is_seeded_and_size_is_capped():
    points = torch.randn(30, 4)
    a, b = greedy_coreset(points, 5, seed=3), greedy_coreset(points, 5, seed=3)
    assert torch.equal(a.indices, b.indices)
    firsts = {int(greedy_coreset(points, 1, seed=s).indices[0]) for s in range(10)}
    assert len(firsts) > 1  # the seed, not the data, decides where selection starts
    assert len(greedy_coreset(points, 100, seed=0).indices) == 30


def test_covering_radius_never_grows_with_the_ratio():
    points = torch.randn(200, 5, dtype=torch.float64)
    coresets = [greedy_coreset(points, k, seed=1) for k in (1, 5, 20, 60, 200)]
    radii = [covering_radius(points, c.indices) for c in coresets]
    assert all(a >= b for a, b in itertools.pairwise(radii))
    assert radii[-1] == 0.0
    assert coresets[2].covering_radius == pytest.approx(radii[2], rel=1e-9)  # reported = true
    assert all(a >= b for a, b in itertools.pairwise(coresets[-1].radii.tolist()))


def test_random_projection_keeps_distances_on_average():
    assert random_projection(64, 128, seed=0) is None  # nothing to gain: use the points
    points = torch.randn(300, 1536, dtype=torch.float64)
    projection = random_projection(1536, 128, seed=0).double()
    before = torch.pdist(points)
    after = torch.pdist(points @ projection)
    assert (after / before).mean() == pytest.approx(1.0, abs=0.05)
    assert torch.equal(projection, random_projection(1536, 128, seed=0).double())


# ---- nearest neighbours ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "n,m,query_chunk,bank_chunk", [(1, 1, 1, 1), (17, 33, 4, 5), (50, 7, 64, 3), (9, 100, 2, 31)]
)
def test_nearest_neighbours_match_brute_force(n, m, query_chunk, bank_chunk):
    generator = torch.Generator().manual_seed(n * m)
    queries = torch.randn(n, 6, generator=generator, dtype=torch.float64)
    bank = torch.randn(m, 6, generator=generator, dtype=torch.float64)
    queries[0] = bank[-1]  # identical to a bank point: distance exactly 0
    expected, expected_index = plain_distances(queries, bank).min(dim=1)
    got, index = nearest_neighbours(queries, bank, query_chunk=query_chunk, bank_chunk=bank_chunk)
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(index, expected_index)
    assert got[0] == 0.0


def test_nearest_distance_is_exact_near_zero_in_float32():
    bank = torch.randn(70, 1536)
    queries = bank[[3, 41]] + torch.tensor([[0.0], [1e-3]])  # equal, and 1e-3 off per coordinate
    got = nearest_distances(queries, bank, bank_chunk=16)
    assert got[0] == 0.0
    assert got[1] == pytest.approx(1e-3 * 1536**0.5, rel=1e-3)


# ---- the method ------------------------------------------------------------------------------


def test_descriptors_are_unit_per_layer_and_local_means():
    early, late = torch.randn(2, 5, 6, 8), torch.randn(2, 5, 6, 8)
    out = patch_descriptors(early, late)
    assert out.shape == (2, 5, 6, 16)
    assert torch.allclose(out[..., :8].norm(dim=-1), torch.ones(2, 5, 6))
    corner = early[1, :2, :2].mean(dim=(0, 1))  # a corner averages its 2×2 in-grid patches
    assert torch.allclose(out[1, 0, 0, :8], corner / corner.norm(), atol=1e-6)
    single = patch_descriptors(early, late, neighbourhood=1)
    assert torch.allclose(single[..., 8:], late / late.norm(dim=-1, keepdim=True))


def test_the_bank_is_gathered_chunk_by_chunk_exactly(tmp_path):
    rng = np.random.default_rng(0)
    # 19 images (chunks of 8, 8, 3) whose grids differ, as in the aspect input mode
    grids = np.array([(3, 4), (4, 3), (2, 5)] * 6 + [(1, 1)])
    n_patches = int((grids[:, 0] * grids[:, 1]).sum())
    early = rng.normal(size=(n_patches, 8)).astype(np.float16)
    features = TrainFeatures(early=early, late=early[:, ::-1].copy(), grids=grids, folder=tmp_path)
    method = PatchCore(MethodSettings(device="cpu"))
    everything = torch.cat(list(method._patch_chunks(features)))
    assert everything.shape == (n_patches, 16)
    # Each image's descriptors are its own grid's, in the cache's row order.
    expected, start = [], 0
    for h, w in grids:
        rows = torch.from_numpy(early[start : start + h * w]).float()
        grid_early, grid_late = rows.reshape(1, h, w, 8), rows.flip(-1).reshape(1, h, w, 8)
        expected.append(patch_descriptors(grid_early, grid_late).reshape(h * w, 16))
        start += h * w
    assert torch.allclose(everything, torch.cat(expected), atol=1e-6)
    chosen = torch.tensor(sorted(rng.choice(n_patches, 30, replace=False).tolist()))
    assert torch.equal(method._gather(features, chosen), everything[chosen])


def test_bad_settings_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="ratio"):
        PatchCore(MethodSettings(device="cpu"), coreset_ratio=0.0)
    with pytest.raises(InputError, match="neighbourhood"):
        PatchCore(MethodSettings(device="cpu"), neighbourhood=2)
    with pytest.raises(InputError, match="training image"):
        PatchCore(MethodSettings(device="cpu")).fit([], tmp_path)


@pytest.fixture(scope="module")
def shared_teacher():
    """Fits load one random teacher, not one each (frozen, so sharing it is safe)."""
    with teacher_loaded_once(patchcore) as teachers:
        yield teachers


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, shared_teacher):
    """PatchCore fitted on four tiny images of different sizes with a random ViT-S/14."""
    root = tmp_path_factory.mktemp("patchcore")
    paths = []
    for i, (h, w) in enumerate([(60, 45), (50, 70), (56, 56), (45, 60)]):
        paths.append(root / f"{i}.png")
        Image.fromarray(textured_image(h, w, seed=i)).save(paths[-1])
    settings = MethodSettings(
        teacher=TeacherConfig(variant="dinov2_vits14", weights="random", image_size=56),
        device="cpu",
        cache_dir=str(root / "cache"),
    )
    method = PatchCore(settings, coreset_ratio=0.5)
    method.fit(paths, root / "work")
    return method, settings, paths, root / "work"


def test_end_to_end_maps_have_each_images_size_and_a_defect_scores_higher(fitted):
    method, *_ = fitted
    assert method.bank.shape == (round(0.5 * 4 * 16), 2 * 384)  # 4 images × 4×4 patches
    normal = textured_image(50, 70, seed=9)
    broken = normal.copy()
    broken[10:30, 20:45] = 255  # a bright defect
    out = method.predict_maps([normal, broken, textured_image(33, 41, seed=3)])
    assert [p.anomaly_map.shape for p in out] == [(50, 70), (50, 70), (33, 41)]
    assert all(p.anomaly_map.dtype == np.float32 for p in out)
    assert all(np.isfinite(p.score) and np.isfinite(p.anomaly_map).all() for p in out)
    assert out[1].score > out[0].score
    defect, rest = out[1].anomaly_map[10:30, 20:45], out[1].anomaly_map[35:, :]
    assert defect.mean() > rest.mean()
    described = method.describe()
    assert described["bank_size"] == 32 and described["n_train_patches"] == 64


def test_a_training_image_scores_lower_than_a_new_one(fitted):
    method, _, paths, _ = fitted
    train = np.asarray(Image.open(paths[2]))  # 56 × 56: no padding, same input as in fit
    map_train = method.predict_maps([train])[0].anomaly_map
    map_new = method.predict_maps([textured_image(56, 56, seed=50)])[0].anomaly_map
    assert map_train.mean() < map_new.mean()


def test_a_second_fit_reloads_the_bank_and_new_settings_rebuild_it(fitted, monkeypatch):
    method, settings, paths, work = fitted

    def no_extraction(*args, **kwargs):
        raise AssertionError("features extracted although the bank could be reloaded")

    with monkeypatch.context() as patched:
        patched.setattr(patchcore, "cached_train_features", no_extraction)
        again = PatchCore(settings, coreset_ratio=0.5)
        again.fit(paths, work)
    assert torch.equal(again.bank, method.bank)
    image = textured_image(40, 52, seed=7)
    assert np.array_equal(
        again.predict_maps([image])[0].anomaly_map, method.predict_maps([image])[0].anomaly_map
    )
    assert again.describe()["reloaded"] is True

    other = PatchCore(settings, coreset_ratio=0.25)  # same folder, other ratio: rebuilt
    other.fit(paths, work)
    assert other.bank.shape[0] == 16
    assert json.loads((work / CONFIG_FILE).read_text())["coreset_ratio"] == 0.25


def test_a_bank_from_another_run_is_not_trusted(fitted, tmp_path):
    method, settings, paths, _ = fitted
    work = tmp_path / "work"
    PatchCore(settings, coreset_ratio=0.5).fit(paths, work)
    config = json.loads((work / CONFIG_FILE).read_text())
    PatchCore(settings, coreset_ratio=0.25).fit(paths, tmp_path / "other")
    (work / BANK_FILE).write_bytes((tmp_path / "other" / BANK_FILE).read_bytes())
    assert json.loads((work / CONFIG_FILE).read_text()) == config  # config of run A, bank of B
    again = PatchCore(settings, coreset_ratio=0.5)
    again.fit(paths, work)
    assert "reloaded" not in again.describe()
    assert torch.equal(again.bank, method.bank)


def test_tiles_mode_banks_every_window_and_a_training_image_scores_zero(tmp_path, shared_teacher):
    """Tiles mode (SPEC §11): the bank is built from every patch of every window, and
    predict cuts the same windows as fit, so with the whole bank kept (duplicates aside:
    on a 2 × 2 grid the 3 × 3 neighbourhood makes a window's four descriptors equal) a
    training image is at distance 0."""
    from l2bt.config import TileSettings
    from l2bt.tiling import TileLayout

    sizes = [(60, 90), (70, 70), (45, 100)]
    paths = []
    for i, (h, w) in enumerate(sizes):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(textured_image(h, w, seed=20 + i)).save(paths[-1])
    settings = MethodSettings(
        teacher=TeacherConfig(
            variant="dinov2_vits14",
            weights="random",
            input_mode="tiles",
            tiles=TileSettings(size=28, overlap=7),
        ),
        device="cpu",
        cache_dir=str(tmp_path / "cache"),
    )
    method = PatchCore(settings, coreset_ratio=1.0)
    method.fit(paths, tmp_path / "work")
    windows = sum(TileLayout.for_image(h, w, TileSettings(28, 7)).count for h, w in sizes)
    assert method.info["n_train_patches"] == windows * 2 * 2  # 2 × 2 patches per window
    assert windows <= method.bank.shape[0] <= windows * 2 * 2
    train = np.asarray(Image.open(paths[0]))
    new = textured_image(60, 90, seed=77)
    seen, unseen = method.predict_maps([train, new])
    assert seen.anomaly_map.shape == unseen.anomaly_map.shape == (60, 90)
    assert seen.anomaly_map.max() < 1e-3 < unseen.anomaly_map.max()
    assert method.describe()["input_mode"] == "tiles"
