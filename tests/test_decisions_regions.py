"""decisions/regions.py: regions are the connected components of a mask."""

from collections import deque

import numpy as np
import pytest

from l2bt.decisions.regions import find_regions

# ---- the guarantee, as a statistical test ---------------------------------------------------


def flood_fill_regions(mask):
    """A plain 8-connected flood fill: list of sets of (row, col) pixels, in scan order."""
    seen = np.zeros_like(mask)
    regions = []
    for r0, c0 in zip(*np.nonzero(mask), strict=True):
        if seen[r0, c0]:
            continue
        pixels, queue = set(), deque([(r0, c0)])
        seen[r0, c0] = True
        while queue:
            r, c = queue.popleft()
            pixels.add((r, c))
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    rr, cc = r + dr, c + dc
                    if (
                        0 <= rr < mask.shape[0]
                        and 0 <= cc < mask.shape[1]
                        and mask[rr, cc]
                        and not seen[rr, cc]
                    ):
                        seen[rr, cc] = True
                        queue.append((rr, cc))
        regions.append(pixels)
    return regions


@pytest.mark.parametrize(
    "shape,density,seed",
    [
        ((1, 1), 1.0, 0),
        ((13, 7), 0.3, 1),
        ((40, 33), 0.45, 2),
        ((20, 20), 0.0, 3),
        ((9, 31), 0.6, 4),
    ],
)
def test_every_region_is_a_connected_component_of_the_mask(shape, density, seed):
    rng = np.random.default_rng(seed)
    mask = rng.random(shape) < density
    anomaly_map = rng.integers(0, 5, shape).astype(np.float32)  # ties
    found = find_regions(anomaly_map, mask)
    expected = flood_fill_regions(mask)
    assert len(found) == len(expected)
    for region, pixels in zip(found, expected, strict=True):
        rows, cols = zip(*pixels, strict=True)
        assert region.area_px == len(pixels)
        assert (region.x0, region.y0) == (min(cols), min(rows))
        assert (region.x1, region.y1) == (max(cols) + 1, max(rows) + 1)  # exclusive
        values = [float(anomaly_map[r, c]) for r, c in pixels]
        assert region.max_score == max(values)
        assert region.mean_score == pytest.approx(sum(values) / len(values))
    assert [r.region for r in found] == list(range(1, len(found) + 1))
