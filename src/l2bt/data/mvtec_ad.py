"""The MVTec AD layout.

ROOT/CAT/{train/good, test/<defect>, ground_truth/<defect>/<stem>_mask.png}.
"""

from __future__ import annotations

from pathlib import Path

from l2bt.data.image_io import is_image_file
from l2bt.data.sample import CategorySplit, Sample
from l2bt.errors import InputError


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_image_file(p))


def _find_mask(gt_dir: Path, stem: str) -> Path | None:
    for candidate in sorted(gt_dir.glob(f"{stem}_mask.*")) + sorted(gt_dir.glob(f"{stem}.*")):
        if is_image_file(candidate):
            return candidate
    return None


def list_categories(root: Path) -> list[str]:
    """Sub-folders of ROOT that hold a train/good folder."""
    return sorted(p.name for p in root.iterdir() if (p / "train" / "good").is_dir())


def load_category(root: Path, category: str) -> CategorySplit:
    base = root / category
    train_dir = base / "train" / "good"
    test_dir = base / "test"
    for needed in (train_dir, test_dir):
        if not needed.is_dir():
            raise InputError("missing folder (expected the MVTec AD layout)", needed)
    train = tuple(
        Sample(image=p, key=f"train/good/{p.stem}") for p in _images(train_dir)
    )
    test: list[Sample] = []
    for defect_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        defect = defect_dir.name
        for p in _images(defect_dir):
            mask = None
            if defect != "good":
                mask = _find_mask(base / "ground_truth" / defect, p.stem)
                if mask is None:
                    raise InputError(
                        f"no ground-truth mask under {base / 'ground_truth' / defect}", p
                    )
            test.append(Sample(image=p, key=f"test/{defect}/{p.stem}", defect=defect, mask=mask))
    return CategorySplit(name=category, root=base, train=train, test=tuple(test))
