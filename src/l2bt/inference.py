"""Predicting many images into the SPEC §5 layout: TIFF maps, scores.csv and PNG overlays.

Every input image gets a key (its path relative to the output folder, without
extension); folders given as inputs keep their own name and inner tree, so
`predict --out maps/bottle data/bottle/test` writes `maps/bottle/test/<defect>/<stem>.tiff`.
Inputs are fully decoded before anything is written, so bad input fails early and
leaves nothing behind; each map is written atomically, so a run that dies keeps every
map it finished.
"""

from __future__ import annotations

import csv
import io
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import tifffile
from PIL import Image
from tqdm.auto import tqdm

from l2bt.atomic import atomic_file, write_text_atomic
from l2bt.data.image_io import is_image_file, read_image
from l2bt.errors import InputError
from l2bt.prediction import Prediction
from l2bt.report.overlay import overlay


class Predictor(Protocol):
    """Anything that turns images into full-resolution anomaly maps and scores."""

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[Prediction]: ...


@dataclass(frozen=True)
class PredictItem:
    image: Path
    key: str  # output path relative to the output folder, without extension


@dataclass(frozen=True)
class PredictSummary:
    n_images: int
    seconds_per_image: tuple[float, ...]  # each batch's time shared among its images

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds_per_image) if self.seconds_per_image else 0.0


def collect_inputs(inputs: Sequence[str | Path]) -> list[PredictItem]:
    """Image files and folders (searched recursively) as items with unique keys."""
    items: list[PredictItem] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if is_image_file(p))
            if not found:
                raise InputError("no image files in folder", path)
            for p in found:
                key = (Path(path.name) / p.relative_to(path)).with_suffix("").as_posix()
                items.append(PredictItem(p, key))
        elif path.is_file():
            items.append(PredictItem(path, path.stem))
        else:
            raise InputError("input not found", path)
    seen: dict[str, Path] = {}
    for item in items:
        if item.key in seen:
            raise InputError(f"two inputs would write the same map {item.key}.tiff "
                             f"(the other is {seen[item.key]})", item.image)
        seen[item.key] = item.image
    return items


def write_map(path: Path, anomaly_map: np.ndarray) -> None:
    """A float32 TIFF, written atomically."""
    with atomic_file(path) as tmp:
        tifffile.imwrite(tmp, anomaly_map.astype(np.float32, copy=False))


def write_scores(path: Path, scores: dict[str, float]) -> None:
    """`scores.csv` with header `key,score`, the format `l2bt evaluate` reads."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["key", "score"])
    for key, score in scores.items():
        writer.writerow([key, repr(float(score))])
    write_text_atomic(path, buffer.getvalue())


def predict_to_folder(
    predictor: Predictor,
    items: Sequence[PredictItem],
    out: Path,
    batch_size: int = 4,
    overlays: bool = True,
    colour_range: tuple[float, float] | None = None,
    progress: bool = True,
) -> PredictSummary:
    """Predict every item; write `<out>/<key>.tiff` (+ `.png` overlay) and `<out>/scores.csv`.

    `colour_range` fixes the overlays' colour scale; without it each overlay spans its
    own map's range.
    """
    for item in tqdm(items, desc="checking inputs", unit="img", disable=not progress):
        read_image(item.image)  # decode fully: bad files fail before anything is written
    out = Path(out)
    scores: dict[str, float] = {}
    seconds: list[float] = []
    bar = tqdm(total=len(items), desc="predict", unit="img", disable=not progress)
    with bar, ThreadPoolExecutor(max_workers=2) as pool:
        for start in range(0, len(items), batch_size):
            batch = items[start:start + batch_size]
            images = list(pool.map(read_image, [item.image for item in batch]))
            tic = time.perf_counter()
            predictions = predictor.predict_batch(images)
            seconds += [(time.perf_counter() - tic) / len(batch)] * len(batch)
            for item, image, prediction in zip(batch, images, predictions, strict=True):
                write_map(out / f"{item.key}.tiff", prediction.anomaly_map)
                if overlays:
                    _write_overlay(out / f"{item.key}.png", image, prediction.anomaly_map,
                                   colour_range)
                scores[item.key] = prediction.score
            bar.update(len(batch))
    write_scores(out / "scores.csv", scores)
    return PredictSummary(len(items), tuple(seconds))


def _write_overlay(path: Path, image: np.ndarray, anomaly_map: np.ndarray,
                   colour_range: tuple[float, float] | None) -> None:
    low, high = colour_range or (float(anomaly_map.min()), float(anomaly_map.max()))
    with atomic_file(path) as tmp:
        Image.fromarray(overlay(image, anomaly_map, low, high)).save(tmp, format="PNG")
