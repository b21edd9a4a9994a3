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

from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np

from l2bt.data.sample import CategorySplit, Sample
from l2bt.errors import InputError
from l2bt.maps.layout import MapsFolder
from l2bt.maps.masks import predicted_masks_present, refuse_zero_one_masks
from l2bt.maps.readers import Files, HeaderCheck, read_defects, read_image
from l2bt.maps.tables import ScoreTable, read_score_table
from l2bt.metrics import EvaluationResult, LowResolution, StreamingEvaluator, default_workers
from l2bt.metrics.evaluator import MaskRule

READERS = 2  # threads decoding maps and masks
READ_AHEAD = 2  # images decoded ahead of the one being counted

Item = TypeVar("Item")


def evaluate_maps(
    split: CategorySplit,
    maps_dir: str | Path,
    *,
    low_res_protocol: int | None = None,
    workers: int | None = None,
    mask_rules: Mapping[str, MaskRule] | None = None,
) -> EvaluationResult:
    """Every metric of SPEC §6 (and §7's metrics with decisions, when the maps folder has
    a predicted mask per image and `scores.csv` a verdict column) for one category's
    maps, at original resolution; `low_res_protocol=N` adds the same maps scored at
    N × N (`l2bt.metrics.low_res`). `workers`: counting threads (default: the cores, at
    most 4). `mask_rules`: named ways to binarise each map (e.g. a run's stored thresholds,
    `decisions.decide.stored_mask_rules`), whose SegF1 is reported.
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
    files = Files(folder, predicted_masks_present(folder, samples))
    checker = HeaderCheck(samples, files)
    run = _Run(
        files,
        checker,
        table,
        low_res_protocol,
        StreamingEvaluator(
            n_images=len(samples),
            workers=default_workers() if workers is None else workers,
            mask_rules=mask_rules,
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

    files: Files
    checker: HeaderCheck
    table: ScoreTable | None
    low_res_size: int | None
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
    readings = _read_ahead(pool, with_masks, lambda s: read_defects(s, run.files, run.low_res_size))
    for s, d in _progress(
        _checked(readings, run.checker), len(with_masks), "pass 1/2, defect pixels"
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
        pool, samples, lambda s: read_image(s, run.files, indices.get(s.key), run.low_res_size)
    )
    for s, image in _progress(
        _checked(readings, run.checker), len(samples), "pass 2/2, every pixel"
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


def _progress(items: Iterator[Item], total: int, title: str) -> Iterator[Item]:
    """`items` with progress shown when it is on (`l2bt.utils.progress`: tqdm is imported
    only for a terminal, which keeps `evaluate`'s start-up short)."""
    from l2bt.utils.progress import progress_bar, progress_enabled

    if not progress_enabled():
        return items
    return iter(progress_bar(items, total=total, desc=title, unit="img"))


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
    readings: Iterator[tuple[Sample, Future[Item]]], checker: HeaderCheck
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
