"""The plan: counts equal to the preprocessing's, the sanity limit, and its lines."""

import numpy as np
import pytest

from helpers import fit_toy, write_mvtec_tree
from l2bt.config import TeacherConfig, TileSettings
from l2bt.errors import InputError
from l2bt.plan import Plan, axis_windows, check_plan, estimate_line, image_inputs, make_plan
from l2bt.preprocess import InputGeometry
from l2bt.tiling import window_starts

SMALL = TeacherConfig("dinov2_vits14", "random", 56)


def _tiles(size: int, overlap: int | None = None, scale: float = 1.0) -> TeacherConfig:
    return TeacherConfig(
        "dinov2_vits14", "random", 56, input_mode="tiles", tiles=TileSettings(size, overlap, scale)
    )


TEACHERS = [
    SMALL,
    TeacherConfig("dinov2_vitb14", "random", 1036),
    TeacherConfig("dinov2_vits14", "random", 98, input_mode="aspect"),
    _tiles(28, 7),
    _tiles(56, None, 0.37),
    _tiles(224, 100, 0.9),
    _tiles(14, 0),
]


@pytest.mark.parametrize("teacher", TEACHERS, ids=lambda t: f"{t.input_mode}-{t.tiles.size}")
def test_counts_equal_the_preprocessings_on_random_sizes(teacher):
    rng = np.random.default_rng(0)
    sizes = [(1, 1), (14, 14), (27, 29), *map(tuple, rng.integers(1, 1600, (60, 2)))]
    for height, width in sizes:
        geometry = InputGeometry.of(teacher, int(height), int(width))
        patches = geometry.n_inputs * geometry.grid[0] * geometry.grid[1]
        assert image_inputs(int(height), int(width), teacher) == (geometry.n_inputs, patches)


def test_axis_windows_counts_the_window_starts():
    for length in (1, 13, 28, 29, 100, 1540):
        for size, overlap in ((28, 0), (28, 27), (224, 56), (14, 3)):
            assert axis_windows(length, size, overlap) == len(window_starts(length, size, overlap))


def test_the_plan_adds_up_images_inputs_and_the_cache():
    teacher = _tiles(28, 7)  # a 40 x 60 image: 2 x 3 windows of 2 x 2 patches
    plan = make_plan([(40, 60), (40, 60)], teacher, [(20, 20)])
    assert plan.inputs == (6, 6, 1) and plan.patches == 2 * 6 * 4 and plan.embed_dim == 384
    assert plan.cache_bytes == 2 * 48 * 384 * 2
    lines = plan.lines()
    assert lines[0] == "plan: 3 images, 1 to 6 teacher inputs per image"
    assert lines[1] == "plan: 13 teacher passes, one per input"
    assert lines[2] == "plan: feature cache 0.1 MiB (48 patches of 384 values, 2 layers, fp16)"
    assert make_plan([], SMALL, [(40, 60)]).lines()[2] == "plan: feature cache none"
    assert (
        make_plan([(40, 60)] * 3, SMALL).lines()[0] == "plan: 3 images, 1 teacher inputs per image"
    )


def test_a_stride_under_an_eighth_of_the_window_is_refused_unless_forced():
    teacher = _tiles(224, 223)  # the 346,212 windows for 40 small images
    plan = make_plan([(640, 480)] * 40, teacher)
    with pytest.raises(InputError, match="--tile-overlap 223 leaves a stride of 1 px"):
        check_plan(plan, teacher, force=False)
    check_plan(plan, teacher, force=True)
    exactly = _tiles(224, 224 - 28)  # a stride of T / 8
    check_plan(make_plan([(640, 480)] * 40, exactly), exactly, force=False)
    under = _tiles(224, 224 - 27)
    with pytest.raises(InputError, match="--tile-overlap"):
        check_plan(make_plan([(640, 480)] * 40, under), under, force=False)


def test_windows_holding_over_64_times_the_pixels_are_refused_unless_forced():
    teacher = _tiles(518)
    line_scan = make_plan([(10, 20_000)], teacher)  # a 10 px high strip padded to 518
    assert line_scan.coverage > 64
    with pytest.raises(InputError, match="--tile-size 518 windows hold"):
        check_plan(line_scan, teacher, force=False)
    check_plan(line_scan, teacher, force=True)
    check_plan(make_plan([(1000, 20_000)], teacher), teacher, force=False)
    check_plan(make_plan([(10, 20_000)], SMALL), SMALL, force=False)  # pad: no windows


def test_the_estimate_scales_the_first_batch_to_all():
    assert (
        estimate_line("predict", 4, 200, 2.0)
        == "predict: first 4 of 200 in 2.0 s; about 100 s in all"
    )
    assert estimate_line("x", 1, 100, 30.0).endswith("about 50 min in all")
    assert estimate_line("x", 1, 1000, 30.0).endswith("about 8.3 h in all")


def test_fit_prints_the_plan_before_it_trains(tmp_path, capsys, feature_cache):
    data = tmp_path / "data"
    write_mvtec_tree(data)
    assert fit_toy(data, tmp_path / "run", "--input-mode", "tiles", "--tile-size", "28") == 0
    printed = capsys.readouterr().out.splitlines()
    out = [line for line in printed if line.startswith("plan:")]
    assert printed.index(out[-1]) < next(
        i for i, x in enumerate(printed) if x.startswith("trained")
    )
    assert out[0] == "plan: 6 images, 4 to 6 teacher inputs per image"
    assert out[1] == "plan: 32 teacher passes, one per input"
    assert out[2].startswith("plan: feature cache 0.2 MiB (128 patches of 384 values")


def test_plan_is_a_frozen_record():
    plan = Plan((1,), 4, 384)
    with pytest.raises(AttributeError):
        plan.patches = 5  # type: ignore[misc]
