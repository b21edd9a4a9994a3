"""Masks for evaluation: each sample's (H, W) bool ground truth; the check that a set of
ground-truth masks is not 0/1-valued (a 0/1 PNG binarised at > 127 is all background,
which would score every defect image as defect-free without a word); and whether a maps
folder has a predicted mask for every image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from l2bt.data.image_io import load_image, open_image, read_mask
from l2bt.data.sample import Sample
from l2bt.errors import InputError
from l2bt.maps.layout import MapsFolder


def sample_mask(sample: Sample, hw: tuple[int, int]) -> np.ndarray:
    """A sample's (H, W) bool ground truth; all False for a defect-free image."""
    if sample.mask is None:
        return np.zeros(hw, dtype=bool)
    mask = read_mask(sample.mask, sample.mask_threshold)
    if mask.shape != tuple(hw):
        raise InputError(
            f"mask is {mask.shape[0]}x{mask.shape[1]} but its image is {hw[0]}x{hw[1]}", sample.mask
        )
    return mask


def refuse_zero_one_masks(samples: Sequence[Sample]) -> None:
    """Called when every defect mask of `samples` came out empty: refuse when their
    largest raw value is 1 (masks saved as 0/1 instead of 0/255)."""
    masks = [s.mask for s in samples if s.mask is not None]
    if masks and max(raw_max(p) for p in masks) == 1:
        raise InputError(
            f"ground-truth masks hold only 0 and 1: all {len(masks)} defect masks are empty "
            "after binarisation (> 127) and their largest value is 1; save them as 0/255",
            Path(masks[0]).parent,
        )


def raw_max(path: Path) -> float:
    """The largest value stored in a mask file, before any binarisation."""
    with open_image(Path(path)) as image:
        return float(np.asarray(load_image(image, path)).max(initial=0))


def predicted_masks_present(folder: MapsFolder, samples: Sequence[Sample]) -> bool:
    """Whether every sample has a predicted mask; some but not all is an error naming
    the first missing one."""
    present = [folder.mask(s.key).is_file() for s in samples]
    if any(present) and not all(present):
        missing = samples[present.index(False)]
        raise InputError(
            "predicted mask missing (the maps folder has masks for other "
            "images: every image needs one, or none)",
            folder.mask(missing.key),
        )
    return all(present)
