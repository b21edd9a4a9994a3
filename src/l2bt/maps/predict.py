"""Predicting many images into the SPEC §5 layout: TIFF maps, scores.csv and PNG overlays,
and with thresholds (SPEC §7) masks, verdicts and regions.csv.

Every input image gets a key (its path relative to the output folder, without
extension); folders given as inputs keep their own name and inner tree, so
`predict --out maps/bottle data/bottle/test` writes `maps/bottle/test/<defect>/<stem>.tiff`;
an output tree inside an input folder is refused. Inputs are fully decoded before
anything is written, so bad input fails early and leaves nothing behind; then `run.json`
(the model's record) is written, and each map atomically, so a run that dies keeps every
map it finished and is known as unfinished. Three batches are in flight: the next one
decoding and the previous one's files being written (up to MAX_IO_WORKERS threads) while
one is predicted. The record decides (thresholds: `<key>_mask.png`, 0/255 at the exact
H × W, a `verdict` column in `scores.csv`, `regions.csv`; overlays outline the regions),
draws the overlays (its colour scale), reads the inputs (its bit depth) and limits their
size (its input settings).
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from l2bt.anomaly_map import image_score
from l2bt.data.image_io import read_image
from l2bt.decisions.decide import DEFECTIVE, decide
from l2bt.decisions.thresholds import Thresholds
from l2bt.errors import InputError
from l2bt.maps.inputs import PredictItem, check_outputs_spare_inputs
from l2bt.maps.layout import (
    MAP_SUFFIX,
    MapsFolder,
    MapsRecord,
    read_map,
    read_maps_record,
    write_map,
    write_maps_record,
    write_mask,
    write_png,
)
from l2bt.maps.overlay import OverlayStyle, image_threshold, overlay_picture
from l2bt.maps.tables import write_regions, write_scores
from l2bt.prediction import Prediction, Predictor
from l2bt.preprocess import header_limit
from l2bt.run import RunDescription
from l2bt.utils.atomic import remove_stale_leftovers
from l2bt.utils.host import usable_cores
from l2bt.utils.progress import progress_bar, tell_estimate

MAX_IO_WORKERS = 8  # threads decoding inputs and encoding outputs beside the predictor


@dataclass(frozen=True)
class PredictOptions:
    """How `predict_to_folder` runs: images per predictor call, whether overlays are
    drawn, whether an interrupted run is finished (`resume`), and the most pixels any
    array of one image's prediction may hold (refused from its header)."""

    batch_size: int = 4
    overlays: bool = True
    resume: bool = False
    max_pixels: int = 50_000_000


@dataclass(frozen=True)
class PredictSummary:
    n_images: int
    seconds_per_image: tuple[float, ...]  # each batch's time shared among its images
    n_defective: int | None = None  # images with the verdict "defective"; None: no verdicts
    scores: dict[str, float] = field(default_factory=dict)  # key -> image score

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds_per_image) if self.seconds_per_image else 0.0


def predict_to_folder(
    predictor: Predictor,
    items: Sequence[PredictItem],
    out: Path,
    options: PredictOptions | None = None,
    record: RunDescription | None = None,
    source: str | None = None,
) -> PredictSummary:
    """Predict every item into `<out>` (see the module docstring); `record` describes and
    decides the maps (default: the predictor's), written as `<out>/run.json` with `source`
    (where the model was loaded from). `options.resume` skips the items whose outputs are
    all there (a killed run's, made by the same record): their score is `image_score` of
    the stored map and their decision is re-derived from it, so the tables are full."""
    options = options or PredictOptions()
    record = record or predictor.record
    folder = MapsFolder(Path(out))
    check_outputs_spare_inputs(items, folder)
    remove_stale_leftovers(folder.root, recursive=True)  # files of a killed predict
    if options.resume:
        _check_same_model(folder, record)
    deciding = record.thresholds
    done = [i for i in items if options.resume and _complete(folder, i.key, deciding, options)]
    pending = [item for item in items if item not in done]
    results = {item.key: _stored(folder, item.key, deciding) for item in done}
    threshold = image_threshold(deciding)
    style = OverlayStyle(record.colour_range, threshold) if options.overlays else None
    write = partial(_write_prediction, folder, style=style)
    read = partial(read_image, bit_depth=record.bit_depth)
    workers = max(2, min(usable_cores(), MAX_IO_WORKERS))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="l2bt-io") as pool:
        check = partial(read, header_check=header_limit(record.teacher, options.max_pixels))
        _check_inputs(pool, workers, pending, check)
        images = {item.key: str(item.image) for item in items}
        size = options.batch_size
        batches = [pending[i : i + size] for i in range(0, len(pending), size)]
        with (
            _begun(folder, MapsRecord(record, source, images)),
            progress_bar(total=len(pending), desc="predict", unit="img") as bar,
        ):
            steps = _Steps(pool, read, write, bar)
            seconds = _predict_batches(predictor, batches, deciding, steps, results)
    return _write_tables(folder, [results[item.key] for item in items], items, seconds)


@contextmanager
def _begun(folder: MapsFolder, made_by: MapsRecord) -> Iterator[None]:
    """`run.json` written before the first map, so that a killed run is seen as unfinished;
    taken back (with the folder, if this run made it) when the run fails before any map is
    there: a failed predict leaves no partial output."""
    created = not folder.root.exists()
    write_maps_record(folder.run, made_by)
    try:
        yield
    except BaseException:
        if not any(folder.root.rglob(f"*{MAP_SUFFIX}")):
            folder.run.unlink(missing_ok=True)
            if created:
                shutil.rmtree(folder.root, ignore_errors=True)
        raise


def _check_same_model(folder: MapsFolder, record: RunDescription) -> None:
    """A prediction is resumed only with the model that began it."""
    earlier = read_maps_record(folder.run)
    if earlier is not None and earlier.record.to_dict() != record.to_dict():
        raise InputError(
            "--resume: the maps here were made by another model (or other thresholds); "
            "predict into another --out",
            folder.run,
        )


_NO_MAP = np.zeros((0, 0), np.float32)  # a finished prediction keeps its decision, not its map


def _check_inputs(
    pool: ThreadPoolExecutor,
    workers: int,
    items: Sequence[PredictItem],
    check: Callable[[Path], np.ndarray],
) -> None:
    """Decode every input fully (`check`: the reader with the size check), `workers` at a
    time, before anything is written: the first bad file (in order) raises, at most one
    round of decoding later."""
    with progress_bar(total=len(items), desc="checking inputs", unit="img") as bar:
        for start in range(0, len(items), workers):
            chunk = [item.image for item in items[start : start + workers]]
            for _ in pool.map(check, chunk):
                bar.update(1)


@dataclass(frozen=True)
class _Steps:
    """What runs beside the predictor: the pool, its reader and writer, the bar."""

    pool: ThreadPoolExecutor
    read: Callable[[Path], np.ndarray]
    write: Callable[[str, np.ndarray, Prediction], None]
    bar: Any

    def reading(self, batch: Sequence[PredictItem]) -> list[Future[np.ndarray]]:
        return [self.pool.submit(self.read, item.image) for item in batch]


def _predict_batches(
    predictor: Predictor,
    batches: Sequence[Sequence[PredictItem]],
    thresholds: Thresholds | None,
    steps: _Steps,
    results: dict[str, Prediction],
) -> list[float]:
    """Predict batch after batch while the pool decodes the next one and writes the
    previous one's files; fill `results` (decisions, no maps); each image's share of its
    batch's seconds."""
    seconds: list[float] = []
    started = time.perf_counter()
    reading = steps.reading(batches[0]) if batches else []
    writing: list[Future[None]] = []
    for index, batch in enumerate(batches):
        images = [future.result() for future in reading]
        if index + 1 < len(batches):
            reading = steps.reading(batches[index + 1])
        tic = time.perf_counter()
        predictions = [decide(p, thresholds) for p in predictor.predict_maps(images)]
        seconds += [(time.perf_counter() - tic) / len(batch)] * len(batch)
        if index == 0:
            total = sum(len(b) for b in batches)
            tell_estimate("predict", len(batch), total, time.perf_counter() - started)
        _finish(writing, steps.bar)  # the previous batch's files, written meanwhile
        writing = [
            steps.pool.submit(steps.write, item.key, image, prediction)
            for item, image, prediction in zip(batch, images, predictions, strict=True)
        ]
        for item, prediction in zip(batch, predictions, strict=True):
            results[item.key] = replace(prediction, anomaly_map=_NO_MAP, mask=None)
    _finish(writing, steps.bar)
    return seconds


def _finish(writing: Sequence[Future[None]], bar: Any) -> None:
    """Wait for a batch's files (raising a writer's error here) and count them done."""
    for future in writing:
        future.result()
    bar.update(len(writing))


def _complete(
    folder: MapsFolder, key: str, thresholds: Thresholds | None, options: PredictOptions
) -> bool:
    """Whether every output of `key` is there (each is written atomically: there is whole)."""
    needed = [folder.map(key)]
    needed += [folder.mask(key)] if thresholds is not None else []
    needed += [folder.overlay(key)] if options.overlays else []
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
