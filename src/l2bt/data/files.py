"""Finding images and their masks in folders; keys that must stay unique."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from l2bt.data.image_io import is_image_file
from l2bt.data.problems import Problems
from l2bt.data.sample import Sample


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if is_image_file(p)) if folder.is_dir() else []


def find_mask(mask_dir: Path, stem: str) -> Path | None:
    """`<stem>_mask.<ext>` (MVTec) or `<stem>.<ext>` (VisA, plain folders) in `mask_dir`."""
    if not mask_dir.is_dir():
        return None
    for pattern in (f"{stem}_mask.*", f"{stem}.*"):
        for candidate in sorted(mask_dir.glob(pattern)):
            if is_image_file(candidate):
                return candidate
    return None


def check_unique_keys(samples: Iterable[Sample], problems: Problems) -> None:
    """Two images that would write the same map (e.g. 000.png and 000.jpg) are a problem."""
    seen: dict[str, Path] = {}
    for sample in samples:
        if sample.key in seen:
            problems.report(
                f"duplicate image name: {seen[sample.key].name} and "
                f"{sample.image.name} would share the output {sample.key}",
                sample.image,
            )
        seen[sample.key] = sample.image


def require_folder(folder: Path, what: str, problems: Problems) -> bool:
    if folder.is_dir():
        return True
    problems.report(f"missing folder ({what})", folder)
    return False


def require_training_images(samples: list[Sample], folder: Path, problems: Problems) -> None:
    if not samples:
        problems.report("no training images", folder)


def train_good(base: Path, layout: str, problems: Problems) -> list[Sample]:
    """The defect-free training images in `base/train/good`, which must exist and hold some."""
    folder = base / "train" / "good"
    if not require_folder(folder, f"training images, {layout} layout", problems):
        return []
    train = [Sample(image=p, key=f"train/good/{p.stem}") for p in list_images(folder)]
    require_training_images(train, folder, problems)
    return train
