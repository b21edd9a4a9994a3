"""Defect regions: 8-connected components of a ground-truth mask, and size bins.

Two families of cumulative size bins, both over the regions of a whole test set:
`SIZE_BINS` by the quartiles of its region areas (the paper's bins: relative, so each
category is split evenly) and `ABSOLUTE_BINS` by fixed areas in pixels (comparable
across categories and data sets).
"""

from __future__ import annotations

import numpy as np

SIZE_BINS = ("q1", "q2", "q3", "all")
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
ABSOLUTE_BIN_AREAS = (64, 256, 1024, 4096)  # px: bin "<=a" holds the regions of area ≤ a
ABSOLUTE_BINS = (*(f"<={area}" for area in ABSOLUTE_BIN_AREAS), "all")


def label_regions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """(H, W) bool mask -> (int32 labels 0..n, n): 0 is background, 1..n the regions."""
    from scipy import ndimage  # imported on first use: it takes ~0.2 s

    labels, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
    return labels.astype(np.int32, copy=False), int(count)


def label_defect_pixels(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The region (1..n) of each True pixel of an (H, W) bool mask, in row-major order
    (the order of `array[mask]`), and n. Labels only the mask's bounding box: the cost
    follows the defects' extent, not the image's."""
    rows = np.flatnonzero(mask.any(axis=1))  # (r,)
    if rows.size == 0:
        return np.zeros(0, np.int32), 0
    cols = np.flatnonzero(mask.any(axis=0))  # (c,)
    box = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # (h, w) view: every True pixel
    labels, count = label_regions(box)
    return labels[box], count  # row-major within the box = row-major in the image


def size_quantiles(areas: np.ndarray) -> tuple[float, float, float] | None:
    """25/50/75 % quantiles (linear) of region areas; None without regions."""
    if areas.size == 0:
        return None
    q1, q2, q3 = np.quantile(areas.astype(np.float64), [0.25, 0.5, 0.75])
    return float(q1), float(q2), float(q3)


def bin_membership(
    areas: np.ndarray, quantiles: tuple[float, float, float] | None
) -> dict[str, np.ndarray]:
    """Per size bin, a bool mask over regions. Bins are cumulative: q1 ⊂ q2 ⊂ q3 ⊂ all."""
    if quantiles is None:
        return {name: np.zeros(areas.shape, bool) for name in SIZE_BINS}
    q1, q2, q3 = quantiles
    return {
        "q1": areas <= q1,
        "q2": areas <= q2,
        "q3": areas <= q3,
        "all": np.ones(areas.shape, bool),
    }


def absolute_membership(areas: np.ndarray) -> dict[str, np.ndarray]:
    """Per absolute bin ("<=64", …, "all"), a bool mask over regions; cumulative."""
    members = {f"<={limit}": areas <= limit for limit in ABSOLUTE_BIN_AREAS}
    members["all"] = np.ones(areas.shape, bool)
    return members
