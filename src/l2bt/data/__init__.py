"""Data layouts, all read into the same `CategorySplit` of `Sample`s."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from l2bt.data import mvtec_ad
from l2bt.data.image_io import read_image, read_mask
from l2bt.data.sample import CategorySplit, Sample
from l2bt.errors import InputError

DATASETS: dict[str, tuple[Callable[[Path, str], CategorySplit], Callable[[Path], list[str]]]] = {
    "mvtec_ad": (mvtec_ad.load_category, mvtec_ad.list_categories),
}


def _layout(dataset: str):
    if dataset not in DATASETS:
        raise InputError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[dataset]


def load_category(root: str | Path, category: str, dataset: str = "mvtec_ad") -> CategorySplit:
    """The train and test samples of one category of a data tree."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("data folder not found", root)
    return _layout(dataset)[0](root, category)


def list_categories(root: str | Path, dataset: str = "mvtec_ad") -> list[str]:
    """Every category found under a data root."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("data folder not found", root)
    return _layout(dataset)[1](root)


__all__ = ["CategorySplit", "Sample", "list_categories", "load_category", "read_image", "read_mask"]
