"""Which defect-free images calibrate the thresholds (SPEC §7).

Calibration images must be defect-free images the model never trained on; the test
split is never used. `--calibration` chooses them:

- default: the data set's own `validation/good` where it has one (MVTec AD 2), else a
  seeded 10 % of `train/good` held out from training, at least 8 images; with fewer
  than 40 training images none are held out (training needs them more) and the run
  gets no thresholds, said in one line;
- a fraction in (0, 1): that share of `train/good`, held out the same way;
- a folder: the good images in it (searched recursively); training keeps every image;
- `0`: the paper's protocol, every image trains, no thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from l2bt.data.image_io import is_image_file
from l2bt.errors import InputError

DEFAULT_FRACTION = 0.1
MIN_HELD_OUT = 8
MIN_TRAIN_TO_HOLD_OUT = 40


@dataclass(frozen=True)
class CalibrationChoice:
    """What `--calibration` asked for: a fraction of train/good, a folder, none, or the
    default (`fraction` and `folder` both None, `disabled` False)."""

    fraction: float | None = None
    folder: Path | None = None
    disabled: bool = False

    @property
    def is_default(self) -> bool:
        return self.fraction is None and self.folder is None and not self.disabled


@dataclass(frozen=True)
class CalibrationSplit:
    """Training images, calibration images, and how they were chosen (for run folders)."""

    train: tuple[Path, ...]
    calibration: tuple[Path, ...]
    source: str  # "none", "validation/good", "train/good (10 %, seed 0)" or the folder
    note: str | None = None  # the one line said when no thresholds will be made

    def describe(self) -> dict[str, object]:
        return {
            "source": self.source,
            "n_calibration": len(self.calibration),
            "calibration_images": [str(p) for p in self.calibration],
        }


def parse_calibration(value: str | None) -> CalibrationChoice:
    """`--calibration FRACTION|DIR|0` (None: the default)."""
    if value is None:
        return CalibrationChoice()
    path = Path(value)
    if path.is_dir():
        return CalibrationChoice(folder=path)
    try:
        number = float(value)
    except ValueError:
        raise InputError("calibration folder not found", path) from None
    if number == 0:
        return CalibrationChoice(disabled=True)
    if not 0 < number < 1:
        raise InputError(
            f"--calibration {value}: a fraction of the training images must be "
            "in (0, 1), or 0 for none"
        )
    return CalibrationChoice(fraction=number)


def calibration_folder_images(folder: Path) -> tuple[Path, ...]:
    """The image files in `folder` and below, sorted; an empty folder is an error."""
    if not folder.is_dir():
        raise InputError("calibration folder not found", folder)
    found = tuple(sorted(p for p in folder.rglob("*") if is_image_file(p)))
    if not found:
        raise InputError("no image files in calibration folder", folder)
    return found


def split_calibration(
    train: Sequence[Path], choice: CalibrationChoice, seed: int = 0, validation: Sequence[Path] = ()
) -> CalibrationSplit:
    """Split `train` (the data set's train/good) into training and calibration images."""
    train = tuple(Path(p) for p in train)
    if choice.disabled:
        return CalibrationSplit(
            train, (), "none", "calibration: off (--calibration 0); no thresholds"
        )
    if choice.folder is not None:
        return CalibrationSplit(train, calibration_folder_images(choice.folder), str(choice.folder))
    if choice.is_default and validation:
        return CalibrationSplit(train, tuple(Path(p) for p in validation), "validation/good")
    fraction = DEFAULT_FRACTION if choice.fraction is None else choice.fraction
    if choice.is_default and len(train) < MIN_TRAIN_TO_HOLD_OUT:
        return CalibrationSplit(
            train,
            (),
            "none",
            f"calibration: {len(train)} training images are fewer than "
            f"{MIN_TRAIN_TO_HOLD_OUT}, so none are held out and there are no thresholds "
            "(pass --calibration DIR with other defect-free images to get them)",
        )
    held_out = max(MIN_HELD_OUT, round(fraction * len(train)))
    if held_out >= len(train):
        raise InputError(
            f"--calibration {fraction:g}: holding out {held_out} of "
            f"{len(train)} training images leaves none to train on"
        )
    chosen = np.sort(np.random.default_rng(seed).choice(len(train), held_out, replace=False))
    keep = np.setdiff1d(np.arange(len(train)), chosen)
    return CalibrationSplit(
        tuple(train[i] for i in keep),
        tuple(train[i] for i in chosen),
        f"train/good ({fraction:.0%}, seed {seed})",
    )
