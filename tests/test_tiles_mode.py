"""Tiles input mode wired into the predict road, the feature cache, fit and the CLI
(SPEC §11; the tiles core itself is tested in test_tiling.py)."""

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from torch.nn import functional as F

from helpers import SHARED_DATA, fit_toy, one_error_line, textured_image, write_mvtec_tree
from l2bt import L2BT
from l2bt.anomaly_map import smooth
from l2bt.cli import main
from l2bt.config import L2BTConfig, TeacherConfig, TileSettings, TrainConfig
from l2bt.data.image_io import ImageTooLarge
from l2bt.errors import InputError
from l2bt.features import cache_key, cached_train_features
from l2bt.methods import MethodSettings
from l2bt.methods.registry import make_method
from l2bt.preprocess import InputGeometry, WorkLimit, preprocess, teacher_inputs
from l2bt.run import RunDescription
from l2bt.teacher import load_teacher
from l2bt.tiling import TileLayout, blend_weights, cut_windows
from l2bt.training import new_students

pytestmark = pytest.mark.usefixtures("feature_cache")


def with_tiles(config, **changes):
    """`config` with some tile settings changed."""
    return replace(config, tiles=replace(config.tiles, **changes))


SMALL_TILES = TeacherConfig(
    "dinov2_vits14", "random", 56, input_mode="tiles", tiles=TileSettings(size=28, overlap=7)
)


@pytest.fixture(scope="module")
def teacher():
    return load_teacher("dinov2_vits14", weights="random")


def model_for(teacher_config, teacher, seed=3):
    """An L2BT with random (untrained) students: enough to compare roads."""
    forward, backward = new_students(teacher.embed_dim, seed)
    return L2BT.from_parts(L2BTConfig(teacher_config), teacher, forward, backward, device="cpu")


def reference_tiled_map(model, image, settings):
    """A plain float64 reference: each window scored alone, upsampled, blended with the
    outer product of the axis weights, summed, smoothed, cropped and resized."""
    layout = TileLayout.for_image(*image.shape[:2], settings)
    rows, cols = blend_weights(layout)
    frame = np.zeros((layout.frame_height, layout.frame_width))
    for index, (top, left) in enumerate(layout.windows):
        window = cut_windows(image, layout)[index]  # (T, T, 3)
        x, _ = preprocess(np.ascontiguousarray(window), layout.size, "aspect")
        patch_map = model.patch_maps(x[None])  # (1, T/14, T/14)
        upsampled = F.interpolate(
            patch_map[None].float(), size=(layout.size,) * 2, mode="bilinear", align_corners=False
        )[0, 0].double()
        row, col = divmod(index, len(layout.col_starts))
        weight = np.outer(rows[row], cols[col])
        frame[top : top + layout.size, left : left + layout.size] += weight * upsampled.numpy()
    smoothed = smooth(torch.from_numpy(frame)[None, None])
    crop = smoothed[
        :,
        :,
        layout.top : layout.top + layout.scaled_height,
        layout.left : layout.left + layout.scaled_width,
    ]
    resized = F.interpolate(crop, size=image.shape[:2], mode="bilinear", align_corners=False)
    return resized[0, 0].numpy()


def test_one_window_equals_aspect_mode_at_the_window_size(tmp_path):
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(textured_image(56, 56, i)).save(paths[-1])
    aspect = TeacherConfig("dinov2_vits14", "random", 56, input_mode="aspect")
    fitted = L2BT.fit(paths, L2BTConfig(aspect, TrainConfig(epochs=1)), device="cpu")
    tiles = replace(aspect, input_mode="tiles", tiles=TileSettings(56))
    tiled = L2BT.from_parts(
        L2BTConfig(tiles), fitted.teacher, fitted.forward_student, fitted.backward_student, "cpu"
    )
    image = textured_image(56, 56, 9)
    image[20:26, 30:35] = 255
    expected, got = fitted.predict(image), tiled.predict(image)
    assert got.anomaly_map.shape == (56, 56)
    np.testing.assert_allclose(got.anomaly_map, expected.anomaly_map, rtol=0, atol=1e-5)
    assert got.score == pytest.approx(expected.score, abs=1e-5)


@pytest.mark.parametrize(
    "height,width,scale",
    [(57, 131, 1.0), (23, 40, 1.0), (101, 75, 0.7), (45, 19, 0.55), (28, 28, 1.0)],
)
def test_maps_are_the_image_size_and_match_the_plain_reference(teacher, height, width, scale):
    config = with_tiles(SMALL_TILES, scale=scale)
    model = model_for(config, teacher)
    image = textured_image(height, width, height + width)
    got = model.predict(image).anomaly_map
    assert got.shape == (height, width) and got.dtype == np.float32
    expected = reference_tiled_map(model, image, config.tiles)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_windows_of_several_images_batch_as_one_at_a_time(teacher):
    model = model_for(SMALL_TILES, teacher)
    images = [textured_image(h, w, h) for h, w in [(57, 131), (30, 30), (57, 131), (90, 44)]]
    together = model.predict_batch(images)
    for image, batched in zip(images, together, strict=True):
        alone = model.predict(image)
        np.testing.assert_allclose(batched.anomaly_map, alone.anomaly_map, rtol=1e-5, atol=1e-6)


def test_preprocess_in_tiles_mode_gives_every_window():
    image = textured_image(40, 70, 1)
    x, geometry = preprocess(image, 56, "tiles", TileSettings(28, 7))
    layout = geometry.tiles
    assert layout is not None and layout.count == 2 * 3
    assert tuple(x.shape) == (6, 3, 28, 28) and geometry.input_shape == (28, 28)
    assert geometry.n_inputs == 6 and geometry.grid == (2, 2)
    windows = cut_windows(image, layout)
    for window, one in zip(windows, x, strict=True):
        plain, _ = preprocess(np.ascontiguousarray(window), 28, "aspect")
        assert torch.equal(one, plain)
    assert torch.equal(teacher_inputs(image, geometry), x)


def test_training_caches_every_window_once(tmp_path, teacher):
    sizes = [(40, 70), (28, 28), (20, 50)]
    paths = []
    for i, (h, w) in enumerate(sizes):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(textured_image(h, w, i)).save(paths[-1])
    features = cached_train_features(teacher, paths, SMALL_TILES, torch.device("cpu"), batch_size=4)
    geometries = [InputGeometry.tiled(h, w, SMALL_TILES.tiles) for h, w in sizes]
    assert (
        len(features) == sum(g.n_inputs for g in geometries) == 6 + 1 + 3
    )  # 28-px windows, step ≤ 21
    assert features.grids.tolist() == [[2, 2]] * len(features)
    # the windows of the last image are the last three rows: compare with the teacher
    x = teacher_inputs(textured_image(20, 50, 2), geometries[2])  # (3, 3, 28, 28)
    early, late = teacher.features(x, SMALL_TILES.layers)
    for window in range(3):
        cached_early, cached_late = features.image(len(features) - 3 + window, torch.device("cpu"))
        torch.testing.assert_close(cached_early, early[window], rtol=0, atol=2e-2)
        torch.testing.assert_close(cached_late, late[window], rtol=0, atol=2e-2)


def test_cache_key_changes_with_size_overlap_and_scale(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(textured_image(30, 30, 0)).save(path)

    def key(config):
        return cache_key(config, "w", "fp32", [path])

    base = key(SMALL_TILES)
    variants = [
        with_tiles(SMALL_TILES, size=42),
        with_tiles(SMALL_TILES, overlap=14),
        with_tiles(SMALL_TILES, scale=0.5),
        replace(SMALL_TILES, input_mode="aspect"),
    ]
    keys = {key(v) for v in variants}
    assert base not in keys and len(keys) == len(variants)
    # the default overlap (T // 4) and its explicit value are the same features
    assert key(replace(SMALL_TILES, tiles=TileSettings(28))) == key(SMALL_TILES)
    # other modes ignore the tile settings, so their cache keys stay as they were
    pad = replace(SMALL_TILES, input_mode="pad")
    assert key(pad) == key(with_tiles(pad, size=42, scale=0.5))


def test_a_run_without_tile_settings_still_loads():
    """Runs before tiles mode had no tile settings; runs of 0.1 had them flat (tile_*)."""
    record = RunDescription("l2bt", TeacherConfig(), "random", 768, train=TrainConfig())
    described = record.to_dict()
    del described["config"]["teacher"]["tiles"]
    assert RunDescription.from_dict(described) == record
    flat = {"tile_size": 56, "tile_overlap": 14, "tile_scale": 0.5}
    described["config"]["teacher"] |= flat
    loaded = RunDescription.from_dict(described).teacher
    assert loaded is not None and loaded.tiles == TileSettings(56, 14, 0.5)


def fit_tiles(data, out, *extra):
    return fit_toy(data, out, "--input-mode", "tiles", *extra)


def test_fit_and_predict_in_tiles_mode_via_the_cli(tmp_path):
    sizes = ((40, 60), (56, 42), (23, 31))
    write_mvtec_tree(tmp_path / "data", sizes=sizes)
    flags = ["--tile-size", "28", "--tile-overlap", "7", "--tile-scale", "0.9"]
    assert fit_tiles(tmp_path / "data", tmp_path / "run", *flags, "--calibration", "0") == 0
    teacher = json.loads((tmp_path / "run/config.json").read_text())["config"]["teacher"]
    assert teacher["input_mode"] == "tiles"
    assert teacher["tiles"] == {"size": 28, "overlap": 7, "scale": 0.9}
    test_dir = tmp_path / "data/toy/test"
    maps = tmp_path / "maps"
    assert (
        main(["predict", "--model", str(tmp_path / "run"), "--out", str(maps), str(test_dir)]) == 0
    )
    written = sorted(maps.rglob("*.tiff"))
    assert len(written) == 2 * len(sizes)
    for path in written:
        image = test_dir.parent / path.relative_to(maps).with_suffix(".png")
        anomaly_map = tifffile.imread(path)
        assert anomaly_map.shape == Image.open(image).size[::-1]
        assert np.isfinite(anomaly_map).all()


@pytest.mark.parametrize(
    "flags,named",
    [
        (["--tile-size", "500"], "--tile-size"),
        (["--tile-size", "0"], "--tile-size"),
        (["--tile-size", "28", "--tile-overlap", "28"], "--tile-overlap"),
        (["--tile-overlap", "-1"], "--tile-overlap"),
        (["--tile-scale", "0"], "--tile-scale"),
        (["--tile-scale", "1.5"], "--tile-scale"),
    ],
)
def test_bad_tile_values_stop_with_one_line(tmp_path, capsys, flags, named):
    write_mvtec_tree(tmp_path / "data")
    assert fit_tiles(tmp_path / "data", tmp_path / "run", *flags) == 2
    assert named in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def described_mode(described):
    """The input mode in a method's description (l2bt nests its run's config)."""
    return described.get("input_mode") or described["config"]["teacher"]["input_mode"]


def test_a_mode_suffix_sets_one_methods_mode_and_names_its_results():
    settings = MethodSettings(
        teacher=TeacherConfig(
            variant="dinov2_vits14", weights="random", tiles=TileSettings(size=28)
        )
    )
    for spec, mode in (
        ("l2bt+tiles", "tiles"),
        ("patchcore+aspect", "aspect"),
        ("dinomaly", "pad"),
    ):
        method = make_method(spec, settings)
        assert method.name == spec and described_mode(method.describe()) == mode
    with pytest.raises(InputError, match=r"\+tile"):
        make_method("l2bt+tile", settings)


@pytest.mark.slow
@pytest.mark.needs_data
def test_a_tiles_benchmark_on_magnetic_tile_fills_every_column(tmp_path):
    """Every method in pad and tiles mode in one run: each tiles row fills every column
    the pad row fills (images larger and smaller than a 112 px window)."""
    methods = ["l2bt", "l2bt+tiles", "patchcore+tiles", "dinomaly+tiles"]
    argv = ["benchmark", "--data", str(SHARED_DATA), "--categories", "magnetic_tile_mini"]
    argv += ["--teacher", "dinov2_vits14", "--weights", "random", "--image-size", "224"]
    argv += ["--tile-size", "112", "--epochs", "1", "--dinomaly-iterations", "3"]
    assert main([*argv, "--methods", ",".join(methods), "--out", str(tmp_path / "b")]) == 0
    with open(tmp_path / "b/results.csv") as f:
        rows = {row["method"]: row for row in csv.DictReader(f)}
    assert list(rows) == methods
    # precision is undefined (empty) when a method calls no image defective
    filled = {column for column, value in rows["l2bt"].items() if value != ""} - {"precision"}
    assert {"AUPRO@30% q1", "AUPRO@5% all", "infer s/img"} <= filled
    for method in methods[1:]:
        assert {column for column, value in rows[method].items() if value != ""} >= filled
        result = json.loads((tmp_path / f"b/results/{method}/magnetic_tile_mini.json").read_text())
        assert described_mode(result["run"]["description"]) == "tiles"


def test_the_service_size_limit_uses_the_runs_windows():
    from l2bt.preprocess import header_limit

    check = header_limit(SMALL_TILES, 10_000)
    assert check == WorkLimit("tiles", 56, 10_000, TileSettings(28, 7))
    with pytest.raises(ImageTooLarge):
        check(100, 101)  # 10,100 image pixels
