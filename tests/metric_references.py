"""Plain references shared by the metric tests: a trapezoid cut at a limit and small
random cases with ties, empty masks and odd sizes."""

import itertools

import numpy as np


def trapezoid_up_to(points, limit):
    """Area under the polyline through `points` (x non-decreasing) over x ∈ [0, limit],
    linearly interpolated at the limit."""
    area = 0.0
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x1 <= limit:
            area += (x1 - x0) * (y0 + y1) / 2
        elif x0 < limit:
            y = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            area += (limit - x0) * (y0 + y) / 2
            break
    return area


def random_case(seed, n_images=4, levels=None, size=(3, 12), every_other_defect_free=False):
    """Small random float32 maps and bool masks; `levels` rounds scores to few values (ties
    everywhere); `every_other_defect_free` leaves the even-numbered images without defects."""
    rng = np.random.default_rng(seed)
    maps, masks = [], []
    for i in range(n_images):
        h, w = rng.integers(*size, size=2)
        m = rng.random((h, w))
        if levels:
            m = np.round(m * levels) / levels
        k = np.zeros((h, w), bool)
        n_defects = 0 if every_other_defect_free and i % 2 == 0 else rng.integers(0, 4)
        for _ in range(n_defects):
            y, x = rng.integers(0, h), rng.integers(0, w)
            k[y : y + rng.integers(1, 4), x : x + rng.integers(1, 5)] = True
            if levels is None:
                m[k] += rng.random() * 0.3
        maps.append(m.astype(np.float32))
        masks.append(k)
    return maps, masks
