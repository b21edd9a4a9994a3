"""The MVTec AD layout.

ROOT/CAT/{train/good, test/<defect>, ground_truth/<defect>/<stem>_mask.png}. The
converted VisA layout (`visa_pytorch`: test/bad with ground_truth/bad/<stem>.png) is the
same shape and is read by the same code.
"""

from __future__ import annotations

from pathlib import Path

from l2bt.data.files import (
    check_unique_keys,
    find_mask,
    list_images,
    require_folder,
    train_good,
)
from l2bt.data.problems import Problems
from l2bt.data.sample import CategorySplit, Sample


def list_categories(root: Path) -> list[str]:
    """Sub-folders of ROOT that hold a train/good folder."""
    return sorted(p.name for p in root.iterdir() if (p / "train" / "good").is_dir())


def load_category(
    root: Path, category: str, problems: Problems | None = None, mask_threshold: float = 127.0
) -> CategorySplit:
    problems = problems or Problems()
    base = root / category
    test_dir = base / "test"
    train = train_good(base, "MVTec AD", problems)
    require_folder(test_dir, "test images, MVTec AD layout", problems)
    test: list[Sample] = []
    defects = sorted(p for p in test_dir.iterdir() if p.is_dir()) if test_dir.is_dir() else []
    for defect_dir in defects:
        defect = defect_dir.name
        for p in list_images(defect_dir):
            mask = None
            if defect != "good":
                mask = find_mask(base / "ground_truth" / defect, p.stem)
                if mask is None:
                    problems.report(
                        f"anomalous image without a mask in {base / 'ground_truth' / defect}", p
                    )
                    continue
            test.append(
                Sample(
                    image=p,
                    key=f"test/{defect}/{p.stem}",
                    defect=defect,
                    mask=mask,
                    mask_threshold=mask_threshold,
                )
            )
    check_unique_keys([*train, *test], problems)
    return CategorySplit(name=category, root=base, train=tuple(train), test=tuple(test))
