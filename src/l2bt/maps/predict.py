"""Predicting many images into the SPEC §5 layout: TIFF maps, scores.csv and PNG overlays,
and with thresholds (SPEC §7) masks, verdicts and regions.csv.

Every input image gets a key (its path relative to the output folder, without
extension); folders given as inputs keep their own name and inner tree, so
`predict --out maps/bottle data/bottle/test` writes `maps/bottle/test/<defect>/<stem>.tiff`.
Inputs are fully decoded before anything is written, so bad input fails early and
leaves nothing behind; each map is written atomically, so a run that dies keeps every
map it finished. Three batches are in flight: the next one decoding and the previous
one's files being written (up to MAX_IO_WORKERS threads) while one is predicted. With
thresholds each image also gets `<key>_mask.png` (0/255, its exact H × W), `scores.csv`
a `verdict` column and `regions.csv` one row per predicted region; overlays outline the
predicted regions.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from l2bt.anomaly_map import image_score
from l2bt.data.image_io import HeaderCheck, is_image_file, read_image
from l2bt.decisions.decide import DEFECTIVE, decide
from l2bt.decisions.thresholds import Thresholds
from l2bt.errors import InputError
from l2bt.maps.layout import (
    MapsFolder,
    read_map,
    write_map,
    write_mask,
    write_png,
    write_regions,
    write_run_description,
    write_scores,
)
from l2bt.maps.overlay import annotate, outline, overlay
from l2bt.prediction import Prediction, Predictor
from l2bt.utils.atomic import remove_stale_leftovers
from l2bt.utils.host import usable_cores
from l2bt.utils.progress import progress_bar

MAX_IO_WORKERS = 8  # threads decoding inputs and encoding outputs beside the predictor


@dataclass(frozen=True)
class PredictItem:
    image: Path
    key: str  # output path relative to the output folder, without extension


@dataclass(frozen=True)
class PredictSummary:
    n_images: int
    seconds_per_image: tuple[float, ...]  # each batch's time shared among its images
    n_defective: int | None = None  # images with the verdict "defective"; None: no verdicts
    scores: dict[str, float] = field(default_factory=dict)  # key -> image score

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
            raise InputError(
                f"two inputs would write the same map {item.key}.tiff "
                f"(the other is {seen[item.key]})",
                item.image,
            )
        seen[item.key] = item.image
    return items


def check_outputs_spare_inputs(items: Sequence[PredictItem], folder: MapsFolder) -> None:
    """No output may land on an input: a folder that is a file, or a map, mask or overlay
    whose path is one of the inputs (e.g. TIFF images predicted into their own folder),
    stops before anything is written."""
    if folder.root.exists() and not folder.root.is_dir():
        raise InputError("--out must be a folder, but this is a file", folder.root)
    inputs = {item.image.resolve() for item in items}
    for item in items:
        for output in (folder.map(item.key), folder.mask(item.key), folder.overlay(item.key)):
            if output.resolve() in inputs:
                raise InputError(
                    f"--out {folder.root} would overwrite this input image "
                    f"(the output of {item.image}); choose another --out",
                    output,
                )


def predict_to_folder(
    predictor: Predictor,
    items: Sequence[PredictItem],
    out: Path,
    batch_size: int = 4,
    overlays: bool = True,
    colour_range: tuple[float, float] | None = None,
    progress: bool = True,
    thresholds: Thresholds | None = None,
    resume: bool = False,
    description: Mapping[str, Any] | None = None,
    header_check: HeaderCheck | None = None,
) -> PredictSummary:
    """Predict every item; write `<out>/<key>.tiff` (+ `.png` overlay) and `<out>/scores.csv`.

    Predictions that carry a decision (a model with thresholds, or `thresholds` given
    here for a predictor without its own) also write `<out>/<key>_mask.png`, a verdict
    column and `<out>/regions.csv`. `colour_range` fixes the overlays' colour scale;
    without it each overlay spans its own map's range. `resume` skips the items whose
    outputs are all there (a killed run's): their score is `image_score` of the stored
    map and their decision is re-derived from it, so scores.csv and regions.csv are full.
    `description` (the model's) is written as `<out>/run.json`, for `l2bt evaluate` to say
    what made the maps. `header_check(height, width)` runs on every input's header before
    it is decoded (e.g. `preprocess.header_limit`: refuse images whose work is too large).
    """
    folder = MapsFolder(Path(out))
    check_outputs_spare_inputs(items, folder)
    remove_stale_leftovers(folder.root, recursive=True)  # files of a killed predict
    deciding = thresholds or getattr(predictor, "thresholds", None)
    done = [i for i in items if resume and _complete(folder, i.key, deciding, overlays)]
    pending = [item for item in items if item not in done]
    results = {item.key: _stored(folder, item.key, deciding) for item in done}
    style = OverlayStyle(colour_range, image_threshold(deciding)) if overlays else None
    write = partial(_write_prediction, folder, style=style)
    workers = max(2, min(usable_cores(), MAX_IO_WORKERS))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="l2bt-io") as pool:
        _check_inputs(pool, workers, pending, header_check, progress)
        batches = [pending[i : i + batch_size] for i in range(0, len(pending), batch_size)]
        bar = progress_bar(total=len(pending), desc="predict", unit="img", enabled=progress)
        with bar:
            seconds = _predict_batches(predictor, batches, pool, thresholds, bar, results, write)
    if description is not None:
        write_run_description(folder.run, description)
    return _write_tables(folder, [results[item.key] for item in items], items, seconds)


_NO_MAP = np.zeros((0, 0), np.float32)  # a finished prediction keeps its decision, not its map


def _check_inputs(
    pool: ThreadPoolExecutor,
    workers: int,
    items: Sequence[PredictItem],
    header_check: HeaderCheck | None,
    progress: bool,
) -> None:
    """Decode every input fully, `workers` at a time, before anything is written: the
    first bad file (in order) raises, at most one round of decoding later."""
    bar = progress_bar(total=len(items), desc="checking inputs", unit="img", enabled=progress)
    with bar:
        for start in range(0, len(items), workers):
            chunk = [item.image for item in items[start : start + workers]]
            for _ in pool.map(partial(_decode_and_drop, header_check=header_check), chunk):
                bar.update(1)


def _decode_and_drop(path: Path, header_check: HeaderCheck | None) -> None:
    read_image(path, header_check)


def _predict_batches(
    predictor: Predictor,
    batches: Sequence[Sequence[PredictItem]],
    pool: ThreadPoolExecutor,
    thresholds: Thresholds | None,
    bar: Any,
    results: dict[str, Prediction],
    write: Callable[[str, np.ndarray, Prediction], None],
) -> list[float]:
    """Predict batch after batch while the pool decodes the next one and writes the
    previous one's files; fill `results` (decisions, no maps); each image's share of its
    batch's seconds."""
    seconds: list[float] = []
    reading = _read_batch(pool, batches[0]) if batches else []
    writing: list[Future[None]] = []
    for index, batch in enumerate(batches):
        images = [future.result() for future in reading]
        if index + 1 < len(batches):
            reading = _read_batch(pool, batches[index + 1])
        tic = time.perf_counter()
        predictions = [decide(p, thresholds) for p in predictor.predict_batch(images)]
        seconds += [(time.perf_counter() - tic) / len(batch)] * len(batch)
        _finish(writing, bar)  # the previous batch's files, written meanwhile
        writing = [
            pool.submit(write, item.key, image, prediction)
            for item, image, prediction in zip(batch, images, predictions, strict=True)
        ]
        for item, prediction in zip(batch, predictions, strict=True):
            results[item.key] = replace(prediction, anomaly_map=_NO_MAP, mask=None)
    _finish(writing, bar)
    return seconds


def _read_batch(pool: ThreadPoolExecutor, batch: Sequence[PredictItem]) -> list[Future[np.ndarray]]:
    """The batch's images, decoding on the pool."""
    return [pool.submit(read_image, item.image) for item in batch]


def _finish(writing: Sequence[Future[None]], bar: Any) -> None:
    """Wait for a batch's files (raising a writer's error here) and count them done."""
    for future in writing:
        future.result()
    bar.update(len(writing))


def _complete(folder: MapsFolder, key: str, thresholds: Thresholds | None, overlays: bool) -> bool:
    """Whether every output of `key` is there (each is written atomically: there is whole)."""
    needed = [folder.map(key)]
    needed += [folder.mask(key)] if thresholds is not None else []
    needed += [folder.overlay(key)] if overlays else []
    return all(path.is_file() for path in needed)


def _stored(folder: MapsFolder, key: str, thresholds: Thresholds | None) -> Prediction:
    """A finished prediction read back from its map: score and decision, without the map."""
    anomaly_map = read_map(folder.map(key))
    prediction = decide(Prediction(anomaly_map, image_score(anomaly_map)), thresholds)
    return replace(prediction, anomaly_map=_NO_MAP, mask=None)


def _write_tables(
    folder: MapsFolder,
    predictions: Sequence[Prediction],
    items: Sequence[PredictItem],
    seconds: Sequence[float],
) -> PredictSummary:
    """scores.csv (+ verdicts) and regions.csv, in the items' order."""
    keys = [item.key for item in items]
    scores = {key: p.score for key, p in zip(keys, predictions, strict=True)}
    decided = {key: p for key, p in zip(keys, predictions, strict=True) if p.verdict is not None}
    verdicts = {key: str(p.verdict) for key, p in decided.items()}
    write_scores(folder.scores, scores, verdicts or None)
    if verdicts:
        write_regions(folder.regions, {key: p.regions for key, p in decided.items()})
    n_defective = sum(v == DEFECTIVE for v in verdicts.values()) if verdicts else None
    return PredictSummary(len(items), tuple(seconds), n_defective, scores)


@dataclass(frozen=True)
class OverlayStyle:
    """How overlays are drawn: the colour scale (None: each map's own range) and the image
    threshold printed beside the score (None: no thresholds)."""

    colour_range: tuple[float, float] | None
    image_threshold: float | None


def image_threshold(deciding: object) -> float | None:
    """The image threshold of the thresholds that decide, if any."""
    return deciding.image if isinstance(deciding, Thresholds) else None


def _write_prediction(
    folder: MapsFolder,
    key: str,
    image: np.ndarray,
    prediction: Prediction,
    style: OverlayStyle | None,
) -> None:
    write_map(folder.map(key), prediction.anomaly_map)
    if prediction.mask is not None:
        write_mask(folder.mask(key), prediction.mask)
    if style is not None:
        write_png(folder.overlay(key), overlay_picture(image, prediction, style))


def overlay_picture(image: np.ndarray, prediction: Prediction, style: OverlayStyle) -> np.ndarray:
    """The map over the image, regions outlined, and below it the colour bar and score."""
    anomaly_map = prediction.anomaly_map
    low, high = style.colour_range or (float(anomaly_map.min()), float(anomaly_map.max()))
    picture = overlay(image, anomaly_map, low, high)
    if prediction.mask is not None:
        picture = outline(picture, prediction.mask)
    return annotate(picture, low, high, prediction.score, style.image_threshold, prediction.verdict)
