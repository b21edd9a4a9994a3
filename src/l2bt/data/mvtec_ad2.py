"""MVTec AD 2: ROOT/CAT/{train/good, validation/good, test_public/{good, bad,
ground_truth/bad/<stem>_mask.png}, test_private, test_private_mixed}.

`test_private` and `test_private_mixed` have no public ground truth: their images are
test samples without it, predicted to `<maps>/<cat>/test_private[_mixed]/<stem>.tiff` —
the per-object folders the official evaluation server takes (`anomaly_images/<cat>/…`
when `--maps` is named `anomaly_images`) — and skipped by `evaluate`. The validation
images are defect-free and kept in `CategorySplit.validation`.
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

PRIVATE_SPLITS = ("test_private", "test_private_mixed")


def list_categories(root: Path) -> list[str]:
    return sorted(
        p.name
        for p in root.iterdir()
        if (p / "train" / "good").is_dir() and (p / "test_public").is_dir()
    )


def load_category(root: Path, category: str, problems: Problems | None = None) -> CategorySplit:
    problems = problems or Problems()
    base = root / category
    public = base / "test_public"
    train = train_good(base, "MVTec AD 2", problems)
    require_folder(public, "public test images, MVTec AD 2 layout", problems)
    validation = [
        Sample(image=p, key=f"validation/good/{p.stem}")
        for p in list_images(base / "validation" / "good")
    ]
    test = [Sample(image=p, key=f"test_public/good/{p.stem}") for p in list_images(public / "good")]
    for p in list_images(public / "bad"):
        mask = find_mask(public / "ground_truth" / "bad", p.stem)
        if mask is None:
            problems.report(f"anomalous image without a mask in {public / 'ground_truth/bad'}", p)
            continue
        test.append(Sample(image=p, key=f"test_public/bad/{p.stem}", defect="bad", mask=mask))
    for split in PRIVATE_SPLITS:
        test += [
            Sample(image=p, key=f"{split}/{p.stem}", defect="unknown", has_ground_truth=False)
            for p in list_images(base / split)
        ]
    check_unique_keys([*train, *validation, *test], problems)
    return CategorySplit(
        name=category, root=base, train=tuple(train), test=tuple(test), validation=tuple(validation)
    )
