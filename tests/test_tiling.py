import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from l2bt.errors import InputError
from l2bt.tiling import (
    TileLayout,
    TileSettings,
    blend_weights,
    cut_windows,
    frame_to_image,
    stitch,
    window_starts,
)


def random_cases(count, seed=0):
    """(length, size, overlap) at random plus the edge lengths T, T + 1, 2T − overlap."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        size = 14 * int(rng.integers(1, 40))
        overlap = int(rng.integers(0, size))
        length = int(rng.integers(1, 6 * size))
        cases.append((length, size, overlap))
        cases += [
            (size, size, overlap),
            (size + 1, size, overlap),
            (2 * size - overlap, size, overlap),
        ]
    cases += [(10_000_019, 518, 129), (10_000_019, 14, 13), (123_457, 518, 0)]
    return cases


def check_starts(length, size, overlap):
    starts = window_starts(length, size, overlap)
    assert starts[0] == 0 and list(starts) == sorted(set(starts))
    if length <= size:
        assert starts == (0,)
        return
    assert starts[-1] == length - size  # the last window ends at the edge, none past it
    steps = np.diff(starts)
    assert steps.max() <= size - overlap  # overlap >= requested, hence no gap
    assert steps.max() - steps.min() <= 1  # evenly spread
    # Fewest: one window fewer cannot cover the length with that overlap.
    assert len(starts) == 2 or (len(starts) - 2) * (size - overlap) < length - size


def test_window_starts_cover_evenly_with_the_fewest_windows():
    for length, size, overlap in random_cases(400):
        check_starts(length, size, overlap)


def test_window_starts_examples():
    assert window_starts(518, 518, 129) == (0,)
    assert window_starts(519, 518, 129) == (0, 1)
    assert window_starts(907, 518, 129) == (0, 389)  # 2T − overlap: exactly two windows
    assert window_starts(908, 518, 129) == (0, 195, 390)
    assert window_starts(56, 28, 0) == (0, 28)  # touching windows when overlap is 0


def layouts(count, seed=1):
    """Random layouts with odd sizes, overlaps from 0 to T − 1 and scales in (0, 1]."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        size = 14 * int(rng.integers(1, 5))
        overlap = int(rng.choice([0, size - 1, int(rng.integers(0, size))]))
        scale = float(rng.choice([1.0, rng.uniform(0.05, 1.0)]))
        height, width = (int(v) for v in rng.integers(1, 5 * size, 2))
        yield TileLayout.for_image(height, width, TileSettings(size, overlap, scale))


def test_layout_pads_only_sides_shorter_than_the_window():
    for layout in layouts(300):
        for side, frame, offset, starts in (
            (layout.scaled_height, layout.frame_height, layout.top, layout.row_starts),
            (layout.scaled_width, layout.frame_width, layout.left, layout.col_starts),
        ):
            assert side >= 1 and frame == max(side, layout.size)
            if side > layout.size:
                assert offset == 0 and frame == side  # never padded in that side
            else:
                assert starts == (0,) and offset == (layout.size - side) // 2
            assert starts[-1] + layout.size == frame


def test_layout_scaled_size_rounds_half_up_and_is_hashable():
    layout = TileLayout.for_image(101, 3, TileSettings(28, 7, 0.5))
    assert (layout.scaled_height, layout.scaled_width) == (51, 2) and layout.rescaled
    assert TileLayout.for_image(101, 3, TileSettings(28, 7, 0.5)) == layout
    assert {layout: 1}[TileLayout.for_image(101, 3, TileSettings(28, 7, 0.5))] == 1
    assert not TileLayout.for_image(7, 9, TileSettings(28)).rescaled
    assert TileLayout.for_image(10, 10, TileSettings(14, scale=0.01)).scaled_height == 1


def weight_stack(layout):
    """(N, frame_h, frame_w) float64: every window's weight placed in the frame."""
    rows, cols = blend_weights(layout)
    size = layout.size
    stack = np.zeros((layout.count, layout.frame_height, layout.frame_width))
    for index, (top, left) in enumerate(layout.windows):
        row, col = divmod(index, len(layout.col_starts))
        stack[index, top : top + size, left : left + size] = np.outer(rows[row], cols[col])
    return stack


def test_blend_weights_sum_to_one_on_every_pixel():
    for layout in layouts(120):
        rows, cols = blend_weights(layout)
        assert (rows > 0).all() and (cols > 0).all()
        total = np.zeros((layout.frame_height, layout.frame_width))
        for index, (top, left) in enumerate(layout.windows):
            row, col = divmod(index, len(layout.col_starts))
            total[top : top + layout.size, left : left + layout.size] += np.outer(
                rows[row], cols[col]
            )
        assert np.abs(total - 1.0).max() < 1e-12


def test_blend_weights_are_read_only():
    rows, _ = blend_weights(TileLayout.for_image(50, 60, TileSettings(28)))
    with pytest.raises(ValueError):
        rows[0, 0] = 2.0


def test_stitch_matches_a_full_stack_reference():
    rng = np.random.default_rng(2)
    for layout in layouts(60, seed=3):
        maps = rng.normal(size=(layout.count, layout.size, layout.size)).astype(np.float32)
        stack = np.zeros_like(weight_stack(layout))
        for index, (top, left) in enumerate(layout.windows):
            stack[index, top : top + layout.size, left : left + layout.size] = maps[index]
        expected = (weight_stack(layout) * stack).sum(axis=0)
        stitched = stitch(torch.from_numpy(maps), layout)
        assert stitched.dtype == torch.float32
        assert stitched.shape == (layout.frame_height, layout.frame_width)
        assert np.allclose(stitched.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_windows_that_agree_stitch_to_exactly_their_values():
    rng = np.random.default_rng(4)
    for layout in layouts(60, seed=5):
        constant = np.float32(rng.choice([0.1, 1 / 3, 7.3e-5, 1234.567, -2.5]))
        shape = (layout.count, layout.size, layout.size)
        stitched = stitch(torch.full(shape, float(constant)), layout)
        assert (stitched.numpy() == constant).all()  # bit-exact, 0 ulp
        # Windows cut from one frame map agree on every pixel: the map comes back exactly.
        frame = rng.normal(size=(layout.frame_height, layout.frame_width)).astype(np.float32)
        windows = [frame[t : t + layout.size, c : c + layout.size] for t, c in layout.windows]
        stitched = stitch(torch.from_numpy(np.stack(windows)), layout)
        assert np.array_equal(stitched.numpy(), frame)


def test_stitch_refuses_maps_of_another_layout():
    layout = TileLayout.for_image(60, 60, TileSettings(28, 7))
    with pytest.raises(ValueError, match="window maps"):
        stitch(torch.zeros(layout.count + 1, 28, 28), layout)


def test_cut_windows_equals_slicing_the_padded_rescaled_image():
    rng = np.random.default_rng(6)
    for layout in layouts(40, seed=7):
        image = rng.integers(0, 256, (layout.height, layout.width, 3), dtype=np.uint8)
        scaled = image
        if layout.rescaled:
            size = (layout.scaled_width, layout.scaled_height)
            scaled = np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))
        rows = np.clip(np.arange(layout.frame_height) - layout.top, 0, layout.scaled_height - 1)
        cols = np.clip(np.arange(layout.frame_width) - layout.left, 0, layout.scaled_width - 1)
        frame = scaled[rows][:, cols]  # edge replication by index clipping
        windows = cut_windows(image, layout)
        assert windows.shape == (layout.count, layout.size, layout.size, 3)
        assert windows.dtype == np.uint8
        for window, (top, left) in zip(windows, layout.windows, strict=True):
            assert np.array_equal(window, frame[top : top + layout.size, left : left + layout.size])


def test_an_image_larger_than_the_window_is_cut_from_its_own_pixels():
    rng = np.random.default_rng(8)
    image = rng.integers(0, 256, (100, 20, 3), dtype=np.uint8)
    layout = TileLayout.for_image(100, 20, TileSettings(28, 5))
    assert layout.top == 0 and layout.frame_height == 100 and layout.row_starts[-1] == 72
    for window, (top, _) in zip(cut_windows(image, layout), layout.windows, strict=True):
        assert np.array_equal(window[:, 4:24], image[top : top + 28])  # rows: no padding
        assert np.array_equal(window[:, 0], image[top : top + 28, 0])  # columns: edge padded


def test_cut_stitch_and_crop_round_trip_at_native_scale():
    rng = np.random.default_rng(9)
    for height, width in ((1, 1), (13, 97), (97, 13), (61, 61), (29, 200)):
        layout = TileLayout.for_image(height, width, TileSettings(28, 9))
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        maps = torch.from_numpy(cut_windows(image, layout)[..., 1].astype(np.float32))
        result = frame_to_image(stitch(maps, layout)[None, None], layout)
        assert np.array_equal(result.numpy(), image[..., 1].astype(np.float32))


def test_the_frame_map_is_cropped_and_resized_to_exactly_h_by_w():
    rng = np.random.default_rng(10)
    for layout in layouts(40, seed=11):
        frame = torch.from_numpy(
            rng.random((layout.frame_height, layout.frame_width)).astype(np.float32)
        )
        result = frame_to_image(frame[None, None], layout)
        assert result.shape == (layout.height, layout.width) and result.dtype == torch.float32
        cropped = frame[
            None,
            None,
            layout.top : layout.top + layout.scaled_height,
            layout.left : layout.left + layout.scaled_width,
        ]
        if layout.rescaled:
            cropped = F.interpolate(
                cropped, size=(layout.height, layout.width), mode="bilinear", align_corners=False
            )
        assert torch.equal(result, cropped[0, 0])


@pytest.mark.parametrize(
    "size,overlap,scale,flag",
    [
        (0, None, 1.0, "--tile-size"),
        (-14, None, 1.0, "--tile-size"),
        (500, None, 1.0, "--tile-size"),
        (28, 28, 1.0, "--tile-overlap"),
        (28, -1, 1.0, "--tile-overlap"),
        (28, None, 0.0, "--tile-scale"),
        (28, None, 1.5, "--tile-scale"),
        (28, None, float("nan"), "--tile-scale"),
    ],
)
def test_bad_settings_are_refused_in_one_line_naming_the_flag(size, overlap, scale, flag):
    with pytest.raises(InputError) as refused:
        TileSettings(size, overlap, scale)
    message = str(refused.value)
    assert message.startswith(flag) and "\n" not in message


def test_default_overlap_is_a_quarter_of_the_window():
    assert TileSettings().size == 518 and TileSettings().overlap == 129
    assert TileSettings(56) == TileSettings(56, 14) and TileSettings(56).min_overlap == 14
