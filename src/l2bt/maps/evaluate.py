"""Scoring a maps folder (SPEC §5) against full-resolution ground truth, streaming.

For each test sample with ground truth, `<maps>/<category>/<key>.tiff` (read through
`l2bt.maps.layout`) and its mask go through `l2bt.metrics.StreamingEvaluator` in two
passes: pass 1 the defect pixels of the images with defects, pass 2 every image. Image
scores come from `scores.csv` when present, else the map maximum; a predicted mask beside
every map, with verdicts, adds the metrics with decisions (SPEC §7). Masks are never resized.

Reader threads read and check maps and masks READ_AHEAD images ahead while the evaluator
counts on `workers` cores, so reading overlaps counting. Each map is read once in full:
an uncompressed TIFF is memory-mapped, pass 1 reads only the pixels under the mask and
keeps their flat indices (4 bytes per defect pixel) so pass 2 rebuilds the mask without
decoding it again; a map that cannot be mapped is decoded in both passes.

Memory: the evaluator's bound, about READ_AHEAD + 2 images in flight, and 4 bytes per
defect pixel. Bad input fails in seconds with one line naming the file: `scores.csv` and
the presence of predicted masks are checked first, and a background thread checks every
header (existence, size) in sample order while the first maps are read. Figures:
benchmarks/README.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np

from l2bt.data.image_io import image_size, read_mask
from l2bt.data.sample import CategorySplit, Sample
from l2bt.errors import InputError
from l2bt.maps.layout import (
    MapsFolder,
    ScoreTable,
    check_map_shape,
    check_shape,
    mapped_or_read,
    read_score_table,
    widened,
)
from l2bt.maps.masks import predicted_masks_present, refuse_zero_one_masks, sample_mask
from l2bt.metrics import EvaluationResult, LowResolution, StreamingEvaluator, default_workers
from l2bt.metrics.evaluator import all_finite
from l2bt.metrics.low_res import resize_bilinear, resize_nearest

READERS = 2  # threads decoding maps and masks
READ_AHEAD = 2  # images decoded ahead of the one being counted
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter

Item = TypeVar("Item")


def evaluate_maps(
    split: CategorySplit,
    maps_dir: str | Path,
    progress: bool = True,
    *,
    low_res_protocol: int | None = None,
    workers: int | None = None,
) -> EvaluationResult:
    """Every metric of SPEC §6 (and §7's metrics with decisions, when the maps folder has
    a predicted mask per image and `scores.csv` a verdict column) for one category's
    maps, at original resolution; `low_res_protocol=N` adds the same maps scored at
    N × N (`l2bt.metrics.low_res`). `workers`: counting threads (default: the cores, at
    most 4). `progress` shows bars on stderr, and only when it is a terminal.
    """
    maps_dir = Path(maps_dir)
    samples = split.evaluable_test
    if not samples:
        raise InputError("no test images with ground truth", split.root)
    if workers is not None and workers < 1:
        raise InputError(f"workers must be at least 1, not {workers}")
    if low_res_protocol is not None and low_res_protocol < 1:
        raise InputError(f"low-resolution size must be at least 1, not {low_res_protocol}")
    folder = MapsFolder(maps_dir / split.name)
    table = read_score_table(folder.scores, [s.key for s in samples])
    files = _Files(folder, predicted_masks_present(folder, samples))
    checker = _HeaderCheck(samples, files)
    run = _Run(
        files,
        checker,
        table,
        low_res_protocol,
        progress and sys.stderr.isatty(),
        StreamingEvaluator(
            n_images=len(samples), workers=default_workers() if workers is None else workers
        ),
        None if low_res_protocol is None else StreamingEvaluator(),
    )
    with ThreadPoolExecutor(READERS, thread_name_prefix="l2bt-read") as pool:
        indices = _pass_one(run, pool, [s for s in samples if s.mask is not None])
        _pass_two(run, pool, samples, indices)
    checker.finish()
    return run.result(split.name)


@dataclass(frozen=True)
class _Run:
    """What both passes share."""

    files: _Files
    checker: _HeaderCheck
    table: ScoreTable | None
    low_res_size: int | None
    show: bool
    evaluator: StreamingEvaluator
    low_res: StreamingEvaluator | None  # the same maps at low_res_size × low_res_size

    def result(self, category: str) -> EvaluationResult:
        result = self.evaluator.result(category)
        if self.low_res is None or self.low_res_size is None:
            return result
        low = self.low_res.result(category)
        return replace(result, low_res=LowResolution(self.low_res_size, low.p_auroc, low.aupro))


def _pass_one(
    run: _Run, pool: ThreadPoolExecutor, with_masks: Sequence[Sample]
) -> dict[str, np.ndarray]:
    """Every defect pixel to the evaluators; returns each mask's defect pixels' flat
    indices, by key, for pass 2."""
    indices: dict[str, np.ndarray] = {}
    readings = _read_ahead(
        pool, with_masks, lambda s: _read_defects(s, run.files, run.low_res_size)
    )
    for s, d in _progress(
        _checked(readings, run.checker), len(with_masks), "pass 1/2, defect pixels", run.show
    ):
        run.evaluator.add_defect_scores(d.mask, d.scores, key=s.key)
        indices[s.key] = d.indices
        if run.low_res is not None and d.low_res is not None:
            small_map, small_mask = d.low_res
            run.low_res.add_defects(small_map, small_mask, key=s.key)
    if all(i.size == 0 for i in indices.values()):
        refuse_zero_one_masks(with_masks)
    return indices


def _pass_two(
    run: _Run, pool: ThreadPoolExecutor, samples: Sequence[Sample], indices: dict[str, np.ndarray]
) -> None:
    """Every image to the evaluators, with its score and decisions."""
    readings = _read_ahead(
        pool, samples, lambda s: _read_image(s, run.files, indices.get(s.key), run.low_res_size)
    )
    for s, image in _progress(
        _checked(readings, run.checker), len(samples), "pass 2/2, every pixel", run.show
    ):
        table = run.table
        run.evaluator.add(
            image.anomaly_map,
            image.mask,
            score=None if table is None else table.scores[s.key],
            anomalous=s.is_anomalous,
            verdict=None if table is None or table.verdicts is None else table.verdicts[s.key],
            predicted_mask=image.predicted_mask,
        )
        if run.low_res is not None and image.low_res is not None:
            small_map, small_mask = image.low_res
            run.low_res.add(small_map, small_mask, anomalous=s.is_anomalous)


def _progress(items: Iterator[Item], total: int, title: str, show: bool) -> Iterator[Item]:
    """`items` with a progress bar when `show` (tqdm is imported only then: start-up)."""
    if not show:
        return items
    from tqdm.auto import tqdm

    return iter(tqdm(items, total=total, desc=title, unit="img"))


def return_large_frees() -> None:
    """Have glibc's malloc give every freed block of 1 MiB or more back to the system.

    A process-wide setting, so the library never calls it: `l2bt evaluate`, a process
    that only evaluates, does (as does the metrics benchmark, to measure that process).

    By default glibc raises its mmap threshold each time a large block is freed, after
    which blocks of that size come from per-thread heaps that keep freed memory: with
    reader and counting threads, ~30 MB of RSS (a fifth of this module's peak) was freed
    memory kept that way. A fixed threshold (mallopt M_MMAP_THRESHOLD) ends that, for
    the whole process; it costs a page fault per page of each new large array, which is
    negligible here. Does nothing where the C library is not glibc."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 1 << 20)  # the C library's symbols


# ---- reading, in the reader threads ---------------------------------------------------------


@dataclass(frozen=True)
class _Files:
    folder: MapsFolder
    predicted_masks: bool  # every sample has one (else none has)

    def map(self, sample: Sample) -> Path:
        return self.folder.map(sample.key)

    def predicted(self, sample: Sample) -> Path:
        return self.folder.mask(sample.key)


@dataclass(frozen=True)
class _Defects:
    """Pass 1's reading of one image with a mask."""

    mask: np.ndarray  # (H, W) bool
    scores: np.ndarray  # (D,) the map at the mask's pixels, row-major
    indices: np.ndarray  # (D,) their flat indices
    low_res: tuple[np.ndarray, np.ndarray] | None  # (N, N) map and mask


@dataclass(frozen=True)
class _Image:
    """Pass 2's reading of one image."""

    anomaly_map: np.ndarray  # (H, W)
    mask: np.ndarray  # (H, W) bool
    predicted_mask: np.ndarray | None  # (H, W) bool
    low_res: tuple[np.ndarray, np.ndarray] | None  # (N, N) map and mask


def _read_defects(sample: Sample, files: _Files, low_res: int | None) -> _Defects:
    hw = image_size(sample.image)
    mask = sample_mask(sample, hw)
    indices = np.flatnonzero(mask)  # (D,) int64
    indices = indices.astype(np.int32) if mask.size < 2**31 else indices
    source = mapped_or_read(files.map(sample), hw)
    scores = widened(np.asarray(source.reshape(-1)[indices]))  # (H·W,): only D pixels read
    if not all_finite(scores):
        raise InputError("anomaly map has non-finite values (NaN or infinity)", files.map(sample))
    small = None
    if low_res is not None:
        small = (resize_bilinear(source, low_res), resize_nearest(mask, low_res))
    return _Defects(mask, scores, indices, small)


def _read_image(
    sample: Sample, files: _Files, indices: np.ndarray | None, low_res: int | None
) -> _Image:
    hw = image_size(sample.image)
    path = files.map(sample)
    anomaly_map = mapped_or_read(path, hw)
    if isinstance(anomaly_map, np.memmap) and not all_finite(anomaly_map):
        # (this read also brings the pages into the page cache for the counting thread)
        raise InputError("anomaly map has non-finite values (NaN or infinity)", path)
    if indices is None or indices.size == 0:
        mask = _no_defects(hw)
    else:
        mask = np.zeros(hw, dtype=bool)
        mask.reshape(-1)[indices] = True  # (H, W) -> (H·W,), a view
    predicted = None
    if files.predicted_masks:
        predicted = read_mask(files.predicted(sample), 127.0)
        check_shape(files.predicted(sample), predicted.shape, hw, what="predicted mask")
    small = None
    if low_res is not None:
        small = (resize_bilinear(anomaly_map, low_res), resize_nearest(mask, low_res))
    return _Image(anomaly_map, mask, predicted, small)


@functools.lru_cache(maxsize=8)
def _no_defects(hw: tuple[int, int]) -> np.ndarray:
    """A read-only all-False (H, W) mask, shared by the defect-free images of a size."""
    mask = np.zeros(hw, dtype=bool)
    mask.flags.writeable = False
    return mask


def _read_ahead(
    pool: ThreadPoolExecutor, samples: Sequence[Sample], read: Callable[[Sample], Item]
) -> Iterator[tuple[Sample, Future[Item]]]:
    """(sample, future of its reading) in order, READ_AHEAD readings in flight."""
    pending: list[tuple[Sample, Future[Item]]] = []
    for sample in samples:
        pending.append((sample, pool.submit(read, sample)))
        if len(pending) > READ_AHEAD:
            yield pending.pop(0)
    yield from pending


def _checked(
    readings: Iterator[tuple[Sample, Future[Item]]], checker: _HeaderCheck
) -> Iterator[tuple[Sample, Item]]:
    """Each reading's result. The header check's problem is raised as soon as it is
    known, and instead of a reader's problem with a later sample."""
    for sample, future in readings:
        checker.raise_if_failed()
        try:
            item = future.result()
        except InputError:
            checker.finish(before=sample)
            raise
        yield sample, item


class _HeaderCheck:
    """Checks, in a background thread and in sample order, that every image's header is
    readable and its map and predicted mask exist with its size (headers only)."""

    def __init__(self, samples: Sequence[Sample], files: _Files) -> None:
        self._order = {s.key: i for i, s in enumerate(samples)}
        self._error: InputError | None = None
        self._failed_at = len(samples)  # the index of the sample with the problem
        self._thread = threading.Thread(
            target=self._run, args=(samples, files), name="l2bt-check", daemon=True
        )
        self._thread.start()

    def _run(self, samples: Sequence[Sample], files: _Files) -> None:
        for i, s in enumerate(samples):
            try:
                hw = image_size(s.image)
                check_map_shape(files.map(s), hw)
                if files.predicted_masks:
                    check_shape(
                        files.predicted(s),
                        image_size(files.predicted(s)),
                        hw,
                        what="predicted mask",
                    )
            except InputError as e:
                self._failed_at, self._error = i, e
                return

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def finish(self, before: Sample | None = None) -> None:
        """Wait for the check; raise its problem, if any (with `before`: only a problem
        of an earlier sample than that one)."""
        self._thread.join()
        if before is None or self._failed_at < self._order[before.key]:
            self.raise_if_failed()
