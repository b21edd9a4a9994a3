"""Plain folders, for users' own data: ROOT/CAT/{normal, abnormal?, masks?}.

`normal/` holds defect-free images (required): every fifth by name (the 5th, 10th, …)
is kept for testing and the rest train, a fixed split. `abnormal/` (optional) holds
defective test images, and `masks/` (optional) their masks, matched by stem
(`<stem>.png` or `<stem>_mask.png`, any > 127 pixel is a defect). Without `masks/`,
abnormal images are predicted but not scored; with it, each needs its mask.
"""

from __future__ import annotations

from pathlib import Path

from l2bt.data.files import (
    check_unique_keys,
    find_mask,
    list_images,
    require_folder,
    require_training_images,
)
from l2bt.data.problems import Problems
from l2bt.data.sample import CategorySplit, Sample

TEST_EVERY = 5


def list_categories(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if (p / "normal").is_dir())


def load_category(root: Path, category: str, problems: Problems | None = None) -> CategorySplit:
    problems = problems or Problems()
    base = root / category
    normal_dir = base / "normal"
    train: list[Sample] = []
    test: list[Sample] = []
    if require_folder(normal_dir, "defect-free images of the folder layout", problems):
        for index, p in enumerate(list_images(normal_dir), start=1):
            if index % TEST_EVERY == 0:
                test.append(Sample(image=p, key=f"test/good/{p.stem}"))
            else:
                train.append(Sample(image=p, key=f"train/good/{p.stem}"))
        require_training_images(train, normal_dir, problems)
    masks = base / "masks"
    for p in list_images(base / "abnormal"):
        mask = find_mask(masks, p.stem) if masks.is_dir() else None
        if masks.is_dir() and mask is None:
            problems.report(f"anomalous image without a mask in {masks}", p)
            continue
        test.append(
            Sample(
                image=p,
                key=f"test/bad/{p.stem}",
                defect="bad",
                mask=mask,
                has_ground_truth=mask is not None,
            )
        )
    check_unique_keys([*train, *test], problems)
    return CategorySplit(name=category, root=base, train=tuple(train), test=tuple(test))
