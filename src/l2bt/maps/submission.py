"""MVTec AD 2 submissions: the upload layout of the official evaluation server (SPEC §7).

For one object, every image of `test_private` and `test_private_mixed` gets

    DIR/anomaly_images/<object>/<split>/<stem>.tiff               float16 map
    DIR/anomaly_images_thresholded/<object>/<split>/<stem>.png    uint8 0/255 mask

named as the official `MVTecAD2_public_code_utils` dataset class names them (the image's
path below the data root, suffix replaced). Its upload checker expects, per object and
split, exactly the counts below, named `000_regular` … (test_private) and `000_mixed` …
(test_private_mixed); the inputs are checked against them before anything is predicted,
so a bad layout stops with one line naming the object and split. An object's files are
written to a staging folder and its two folders renamed into place when complete. Without
thresholds only `anomaly_images` is written (the checker accepts that, with a warning).
Maps are clipped to float16's finite range (65,504) before conversion.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from l2bt.data.files import list_images
from l2bt.data.image_io import read_image
from l2bt.decisions.decide import decide
from l2bt.errors import InputError
from l2bt.maps.layout import write_map, write_mask
from l2bt.prediction import Prediction, Predictor
from l2bt.utils.atomic import TMP_MARK
from l2bt.utils.progress import progress_bar

# Images per object and private split, as the official upload checker counts them.
OFFICIAL_FILE_COUNTS = {
    "can": 321,
    "fabric": 314,
    "fruit_jelly": 255,
    "rice": 277,
    "sheet_metal": 142,
    "vial": 276,
    "wallplugs": 232,
    "walnuts": 228,
}
SPLIT_SUFFIXES = {"test_private": "regular", "test_private_mixed": "mixed"}
FLOAT16_MAX = float(np.finfo(np.float16).max)
MAPS, MASKS = "anomaly_images", "anomaly_images_thresholded"


@dataclass(frozen=True)
class SubmissionSummary:
    object_name: str
    n_images: int
    thresholded: bool


def private_images(
    object_dir: Path, counts: Mapping[str, int] = OFFICIAL_FILE_COUNTS
) -> dict[str, list[Path]]:
    """Each private split's images, checked against the names and counts the upload
    checker expects."""
    name = object_dir.name
    if name not in counts:
        raise InputError(
            f"not an MVTec AD 2 object: {name!r} (expected one of {', '.join(sorted(counts))})",
            object_dir,
        )
    found = {}
    for split, suffix in SPLIT_SUFFIXES.items():
        images = list_images(object_dir / split)
        expected = {f"{i:03d}_{suffix}" for i in range(counts[name])}
        stems = {p.stem for p in images}
        if stems != expected or len(images) != len(expected):
            missing, extra = sorted(expected - stems), sorted(stems - expected)
            detail = (
                f"missing {missing[0]}"
                if missing
                else f"unexpected {extra[0]}"
                if extra
                else "duplicate names"
            )
            raise InputError(
                f"object {name}, split {split}: {len(images)} images, the upload "
                f"checker expects {counts[name]} named 000_{suffix} … ({detail})",
                object_dir / split,
            )
        found[split] = images
    return found


def write_submission(
    predictor: Predictor,
    object_dir: Path,
    out: Path,
    batch_size: int = 4,
    counts: Mapping[str, int] = OFFICIAL_FILE_COUNTS,
) -> SubmissionSummary:
    """Predict an object's private splits into the upload layout under `out`; masks at
    the thresholds of the predictor's record, if it has them."""
    object_dir, out = Path(object_dir), Path(out)
    splits = private_images(object_dir, counts)
    name = object_dir.name
    thresholds, depth = predictor.record.thresholds, predictor.record.bit_depth
    kinds = [MAPS] + ([MASKS] if thresholds is not None else [])
    total = sum(len(images) for images in splits.values())
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}{TMP_MARK}-", dir=out))
    try:
        with progress_bar(total=total, desc=f"submission {name}", unit="img") as bar:
            for split, images in splits.items():
                for start in range(0, len(images), batch_size):
                    batch = images[start : start + batch_size]
                    pixels = [read_image(p, bit_depth=depth) for p in batch]
                    predictions = predictor.predict_maps(pixels)
                    for path, prediction in zip(batch, predictions, strict=True):
                        _write_files(
                            staging, name, split, path.stem, decide(prediction, thresholds)
                        )
                    bar.update(len(batch))
        for kind in kinds:
            _move_into_place(staging / kind / name, out / kind / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    check_submission(out, [name], counts)
    return SubmissionSummary(name, total, thresholds is not None)


def _write_files(root: Path, name: str, split: str, stem: str, prediction: Prediction) -> None:
    """One image's float16 map and, when decided, its 0/255 mask, under `root`."""
    values = np.clip(prediction.anomaly_map, -FLOAT16_MAX, FLOAT16_MAX)
    write_map(root / MAPS / name / split / f"{stem}.tiff", values, dtype=np.float16)
    if prediction.mask is not None:
        write_mask(root / MASKS / name / split / f"{stem}.png", prediction.mask)


def _move_into_place(staged: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staged, target)


def check_submission(
    out: Path, object_names: Sequence[str], counts: Mapping[str, int] = OFFICIAL_FILE_COUNTS
) -> None:
    """The written layout has, per object and split, the files the upload checker counts."""
    for name in object_names:
        for kind, suffix in ((MAPS, ".tiff"), (MASKS, ".png")):
            if not (out / kind).is_dir():
                continue
            for split in SPLIT_SUFFIXES:
                folder = out / kind / name / split
                files = sorted(folder.glob(f"*{suffix}")) if folder.is_dir() else []
                if len(files) != counts[name]:
                    raise InputError(
                        f"object {name}, split {split}: {len(files)} {suffix} "
                        f"files, the upload checker expects {counts[name]}",
                        folder,
                    )
