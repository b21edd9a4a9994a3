"""VisA, read from the raw release with no conversion step, or from its converted layout.

Raw release: ROOT/<cat>/Data/Images/{Normal,Anomaly}, ROOT/<cat>/Data/Masks/Anomaly and
ROOT/split_csv/1cls.csv with columns object, split, label, image, mask (paths relative to
ROOT; label "normal" or "anomaly"). Converted (`visa_pytorch`): the MVTec AD layout with
test/{good,bad} and ground_truth/bad/<stem>.png. VisA masks carry region ids, so they are
binarised at > 0. Image sizes differ within a category; nothing is resized.
"""

from __future__ import annotations

import csv
from pathlib import Path

from l2bt.data import mvtec_ad
from l2bt.data.files import check_unique_keys, require_training_images
from l2bt.data.problems import Problems
from l2bt.data.sample import CategorySplit, Sample

SPLIT_CSV = Path("split_csv") / "1cls.csv"
COLUMNS = {"object", "split", "label", "image", "mask"}


def is_raw(root: Path) -> bool:
    return (root / SPLIT_CSV).is_file()


def list_categories(root: Path) -> list[str]:
    if not is_raw(root):
        return mvtec_ad.list_categories(root)
    with open(root / SPLIT_CSV, newline="") as f:
        return sorted({row["object"] for row in csv.DictReader(f)})


def load_category(root: Path, category: str, problems: Problems | None = None) -> CategorySplit:
    problems = problems or Problems()
    if not is_raw(root):
        return mvtec_ad.load_category(root, category, problems, mask_threshold=0.0)
    rows = _rows(root / SPLIT_CSV, category, problems)
    train, test = [], []
    for line, row in rows:
        image = root / row["image"]
        if not image.is_file():
            problems.report(f"image listed in {SPLIT_CSV} (line {line}) not found", image)
            continue
        if row["split"] == "train":
            train.append(Sample(image=image, key=f"train/good/{image.stem}"))
        elif row["label"] == "normal":
            test.append(Sample(image=image, key=f"test/good/{image.stem}"))
        else:
            mask = root / row["mask"] if row["mask"] else None
            if mask is None or not mask.is_file():
                problems.report(f"anomalous image without a mask ({SPLIT_CSV} line {line})", image)
                continue
            test.append(
                Sample(
                    image=image,
                    key=f"test/bad/{image.stem}",
                    defect="bad",
                    mask=mask,
                    mask_threshold=0.0,
                )
            )
    require_training_images(train, root / category, problems)
    check_unique_keys([*train, *test], problems)
    return CategorySplit(name=category, root=root / category, train=tuple(train), test=tuple(test))


def _rows(path: Path, category: str, problems: Problems) -> list[tuple[int, dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not set(reader.fieldnames) >= COLUMNS:
            problems.report(f"expected the columns {', '.join(sorted(COLUMNS))}", path)
            return []
        rows = [
            (line, row) for line, row in enumerate(reader, start=2) if row["object"] == category
        ]
    if not rows:
        problems.report(f"no rows for category {category!r}", path)
    return rows
