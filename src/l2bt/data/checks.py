"""Every problem of a data tree at once: structure, and every file decoded in full."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from l2bt.data import load_category
from l2bt.data.image_io import read_image, read_mask
from l2bt.data.problems import DataProblem, Problems
from l2bt.data.sample import CategorySplit
from l2bt.errors import InputError
from l2bt.utils.progress import progress_bar


@dataclass(frozen=True)
class CategoryReport:
    category: str
    problems: tuple[DataProblem, ...]
    split: CategorySplit | None


def check_category(root: str | Path, category: str, dataset: str = "mvtec_ad") -> CategoryReport:
    """Structure first (missing folders, masks, training images, duplicate names), then
    each image and mask decoded in full (unreadable or truncated files, mask sizes)."""
    problems = Problems(strict=False)
    try:
        split = load_category(root, category, dataset, problems)
    except InputError as e:  # nothing to look into: the category itself is missing
        return CategoryReport(category, (DataProblem(e.path or str(root), e.problem),), None)
    samples = [*split.train, *split.validation, *split.test]
    for sample in progress_bar(samples, desc=f"checking {category}", unit="img"):
        try:
            height, width = read_image(sample.image).shape[:2]
        except InputError as e:
            problems.report(e.problem, sample.image)
            continue
        if sample.mask is None:
            continue
        try:
            mask = read_mask(sample.mask, sample.mask_threshold)
        except InputError as e:
            problems.report(e.problem, sample.mask)
            continue
        if mask.shape != (height, width):
            problems.report(
                f"mask is {mask.shape[0]}x{mask.shape[1]} but its image "
                f"{sample.image.name} is {height}x{width}",
                sample.mask,
            )
        elif not mask.any():
            problems.report("mask of an anomalous image is empty", sample.mask)
    return CategoryReport(category, tuple(problems.found), split)
