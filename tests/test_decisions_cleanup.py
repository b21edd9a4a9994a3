"""decisions/cleanup.py: mask clean-up equal to a plain reference, monotone,
shape-preserving, validated."""

import numpy as np
import pytest
from scipy import ndimage

from l2bt.decisions.cleanup import Cleanup
from l2bt.errors import InputError

SETTINGS = [
    Cleanup(),
    Cleanup(min_region_area=1),
    Cleanup(min_region_area=3),
    Cleanup(close_radius=1),
    Cleanup(close_radius=2),
    Cleanup(close_radius=3),
    Cleanup(fill_holes=True),
    Cleanup(min_region_area=4, close_radius=1, fill_holes=True),
    Cleanup(min_region_area=2, close_radius=2, fill_holes=True),
    Cleanup(min_region_area=10**6),
]

# ---- the plain reference: shifts for the morphology, scipy's hole filling, a loop over regions


def reference_closing(mask, radius):
    """Closing by the disc in the zero-extended plane: OR of shifted copies, then AND."""
    height, width = mask.shape
    offsets = [
        (dy, dx)
        for dy in range(-radius, radius + 1)
        for dx in range(-radius, radius + 1)
        if dy * dy + dx * dx <= radius * radius
    ]
    margin = 2 * radius
    plane = np.zeros((height + 2 * margin, width + 2 * margin), dtype=bool)
    plane[margin : margin + height, margin : margin + width] = mask
    dilated = np.zeros_like(plane)
    for dy, dx in offsets:
        dilated |= np.roll(plane, (dy, dx), axis=(0, 1))  # the 2r margin keeps wrap-around out
    eroded = np.ones_like(plane)
    for dy, dx in offsets:
        eroded &= np.roll(dilated, (dy, dx), axis=(0, 1))
    return eroded[margin : margin + height, margin : margin + width]


def reference_remove_small(mask, min_area):
    regions, count = ndimage.label(mask, structure=np.ones((3, 3)))
    kept = np.zeros_like(mask)
    for label in range(1, count + 1):
        region = regions == label
        if region.sum() >= min_area:
            kept |= region
    return kept


def reference_cleanup(mask, cleanup):
    out = mask.copy()
    if cleanup.close_radius:
        out = reference_closing(out, cleanup.close_radius)
    if cleanup.fill_holes:
        out = ndimage.binary_fill_holes(out)  # default structure: background 4-connected
    if cleanup.min_region_area:
        out = reference_remove_small(out, cleanup.min_region_area)
    return out


def random_masks(rng, count):
    shapes = [(1, 1), (1, 7), (9, 1), (2, 2), (5, 8), (13, 11), (17, 23), (31, 29)]
    for index in range(count):
        height, width = shapes[index % len(shapes)]
        kind = index % 4
        if kind == 0:
            yield rng.random((height, width)) < rng.uniform(0.05, 0.8)
        elif kind == 1:  # blobs with holes and gaps, touching the border
            field = ndimage.gaussian_filter(rng.standard_normal((height, width)), 1.2)
            yield np.abs(field) > rng.uniform(0.05, 0.4) * max(np.abs(field).max(), 1e-9)
        elif kind == 2:
            yield np.zeros((height, width), dtype=bool)
        else:
            yield np.ones((height, width), dtype=bool)


def test_reference_closing_knows_a_gap_and_the_border():
    """The reference itself: closes a 1-pixel gap; the border does not erode a defect."""
    mask = np.zeros((5, 7), dtype=bool)
    mask[1:4, 0:3] = True
    mask[1:4, 4:7] = True
    closed = reference_closing(mask, 1)
    assert closed[2, 3] and closed[1:4, 0].all() and closed[1:4, 6].all()
    assert not closed[0].any() and not closed[4].any()


@pytest.mark.parametrize("seed", range(len(SETTINGS)))
def test_equals_the_plain_reference(seed):
    cleanup = SETTINGS[seed]
    rng = np.random.default_rng(seed)
    for mask in random_masks(rng, 80):
        cleaned = cleanup.apply(mask)
        assert cleaned.dtype == bool and cleaned.shape == mask.shape
        np.testing.assert_array_equal(cleaned, reference_cleanup(mask, cleanup))


def test_a_hole_needs_a_4_connected_background_path_to_the_border():
    ring = np.array(
        [[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=bool
    )  # diagonal chain: the centre is enclosed
    assert Cleanup(fill_holes=True).apply(ring)[1, 1]
    notch = np.array([[1, 1, 1], [1, 0, 0], [1, 1, 1]], dtype=bool)  # the gap reaches the border
    np.testing.assert_array_equal(Cleanup(fill_holes=True).apply(notch), notch)


def test_regions_are_8_connected():
    diagonal = np.eye(4, dtype=bool)
    np.testing.assert_array_equal(Cleanup(min_region_area=4).apply(diagonal), diagonal)
    assert not Cleanup(min_region_area=5).apply(diagonal).any()


@pytest.mark.parametrize("cleanup", SETTINGS, ids=str)
def test_monotone_in_nesting(cleanup):
    rng = np.random.default_rng(7)
    for mask in random_masks(rng, 120):
        larger = mask | (rng.random(mask.shape) < rng.uniform(0.0, 0.3))
        small, large = cleanup.apply(mask), cleanup.apply(larger)
        assert not (small & ~large).any()


def test_identity_and_input_untouched():
    rng = np.random.default_rng(3)
    mask = rng.random((6, 9)) < 0.5
    before = mask.copy()
    for cleanup in (Cleanup(), Cleanup(min_region_area=1)):
        assert cleanup.is_identity
        out = cleanup.apply(mask)
        np.testing.assert_array_equal(out, mask)
        assert out is not mask
    for cleanup in SETTINGS[2:]:
        assert not cleanup.is_identity
        cleanup.apply(mask)
    np.testing.assert_array_equal(mask, before)


def test_dict_round_trip_and_defaults():
    cleanup = Cleanup(min_region_area=5, close_radius=2, fill_holes=True)
    assert cleanup.to_dict() == {"min_region_area": 5, "close_radius": 2, "fill_holes": True}
    assert Cleanup.from_dict(cleanup.to_dict()) == cleanup
    assert Cleanup.from_dict({}) == Cleanup()
    assert Cleanup.from_dict({"close_radius": 3}) == Cleanup(close_radius=3)


@pytest.mark.parametrize(
    "data, key",
    [
        ({"min_region_area": -1}, "min_region_area"),
        ({"min_region_area": 2.5}, "min_region_area"),
        ({"min_region_area": True}, "min_region_area"),
        ({"close_radius": "2"}, "close_radius"),
        ({"close_radius": -3}, "close_radius"),
        ({"fill_holes": 1}, "fill_holes"),
        ({"fill_holes": "yes"}, "fill_holes"),
        ({"min_area": 3}, "min_area"),
    ],
)
def test_bad_values_are_refused_by_name(data, key):
    with pytest.raises(InputError, match=key):
        Cleanup.from_dict(data)


def test_not_a_2d_mask():
    with pytest.raises(ValueError, match="shape"):
        Cleanup(close_radius=1).apply(np.zeros((2, 3, 4), dtype=bool))
