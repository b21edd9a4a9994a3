"""Which data layouts exist, and loading one category or listing the categories of a root."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from l2bt.data import folder, mvtec_ad, mvtec_ad2, visa
from l2bt.data.problems import Problems
from l2bt.data.sample import CategorySplit
from l2bt.errors import InputError

Loader = Callable[[Path, str, Problems | None], CategorySplit]
DATASETS: dict[str, tuple[Loader, Callable[[Path], list[str]]]] = {
    "mvtec_ad": (mvtec_ad.load_category, mvtec_ad.list_categories),
    "visa": (visa.load_category, visa.list_categories),
    "mvtec_ad2": (mvtec_ad2.load_category, mvtec_ad2.list_categories),
    "folder": (folder.load_category, folder.list_categories),
}


def _layout(dataset: str) -> tuple[Loader, Callable[[Path], list[str]]]:
    if dataset not in DATASETS:
        raise InputError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[dataset]


def _root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise InputError("data folder not found", root)
    return root


def load_category(
    root: str | Path, category: str, dataset: str = "mvtec_ad", problems: Problems | None = None
) -> CategorySplit:
    """The train and test samples of one category of a data tree."""
    root = _root(root)
    loader = _layout(dataset)[0]
    if not (root / category).is_dir() and not (dataset == "visa" and visa.is_raw(root)):
        raise InputError(f"category {category!r} not found", root / category)
    return loader(root, category, problems)


def list_categories(root: str | Path, dataset: str = "mvtec_ad") -> list[str]:
    """Every category found under a data root."""
    return _layout(dataset)[1](_root(root))
