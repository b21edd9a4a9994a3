"""What every data layout is turned into: a category's train and test samples."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sample:
    """One image of a data set.

    `key` is where the sample's outputs live relative to `<out>/<category>/`, without
    extension, e.g. ``test/crack/000``: maps are written to ``<key>.tiff``. `defect` is
    "good" for defect-free images. `mask` is None for defect-free images and for test
    images whose ground truth is not public (`has_ground_truth` False).
    """

    image: Path
    key: str
    defect: str = "good"
    mask: Path | None = None
    has_ground_truth: bool = True
    mask_threshold: float = 127.0  # 8-bit masks: > 127; VisA region-id masks: > 0

    @property
    def is_anomalous(self) -> bool:
        return self.defect != "good"


@dataclass(frozen=True)
class CategorySplit:
    """The train (defect-free) and test samples of one category."""

    name: str
    root: Path
    train: tuple[Sample, ...]
    test: tuple[Sample, ...]
    validation: tuple[Sample, ...] = ()  # defect-free held-out images, where a layout has them

    @property
    def evaluable_test(self) -> tuple[Sample, ...]:
        """Test samples that have ground truth (what `evaluate` scores)."""
        return tuple(s for s in self.test if s.has_ground_truth)
