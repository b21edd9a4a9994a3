"""Scoring anomaly maps on disk against full-resolution ground truth.

Reads `<maps>/<category>/<key>.tiff` (SPEC §5) for every test sample that has ground
truth, checks each map against its image's size before any work, and streams maps and
masks through `l2bt.metrics.PixelEvaluator`. Image scores come from
`<maps>/<category>/scores.csv` (header `key,score`) when present, else the map maximum.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import tifffile
from tqdm.auto import tqdm

from l2bt.data.image_io import image_size, read_mask
from l2bt.data.sample import CategorySplit, Sample
from l2bt.errors import InputError
from l2bt.metrics import EvaluationResult, PixelEvaluator, auroc


def map_path(maps_dir: Path, category: str, sample: Sample) -> Path:
    return Path(maps_dir) / category / f"{sample.key}.tiff"


def read_map(path: Path, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """A float32 (H, W) anomaly map, checked for size and finiteness."""
    if not path.is_file():
        raise InputError("anomaly map not found", path)
    try:
        anomaly_map = tifffile.imread(path)
    except Exception as e:  # tifffile raises several types for broken files
        raise InputError(f"cannot read anomaly map ({e})", path) from e
    if anomaly_map.ndim == 3 and anomaly_map.shape[0] == 1:  # (1, H, W) -> (H, W)
        anomaly_map = anomaly_map[0]
    if anomaly_map.ndim != 2:
        raise InputError(f"anomaly map must be 2-D, got shape {anomaly_map.shape}", path)
    if expected_hw is not None and anomaly_map.shape != tuple(expected_hw):
        raise InputError(f"anomaly map is {anomaly_map.shape[0]}x{anomaly_map.shape[1]} "
                         f"but its image is {expected_hw[0]}x{expected_hw[1]}", path)
    if not np.isfinite(anomaly_map).all():
        raise InputError("anomaly map has non-finite values", path)
    return anomaly_map.astype(np.float32, copy=False)


def _map_shape(path: Path) -> tuple[int, ...]:
    if not path.is_file():
        raise InputError("anomaly map not found", path)
    try:
        with tifffile.TiffFile(path) as tif:
            shape = tuple(tif.series[0].shape)
    except Exception as e:  # tifffile raises several types for broken files
        raise InputError(f"cannot read anomaly map ({e})", path) from e
    return shape[1:] if len(shape) == 3 and shape[0] == 1 else shape


def read_scores(path: Path) -> dict[str, float] | None:
    if not path.is_file():
        return None
    scores: dict[str, float] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"key", "score"} <= set(reader.fieldnames):
            raise InputError("scores file needs the columns key,score", path)
        for line, row in enumerate(reader, start=2):
            try:
                scores[row["key"]] = float(row["score"])
            except (TypeError, ValueError) as e:
                raise InputError(f"line {line}: score {row['score']!r} is not a number",
                                 path) from e
    return scores


def _mask(sample: Sample, hw: tuple[int, int]) -> np.ndarray:
    if sample.mask is None:
        return np.zeros(hw, dtype=bool)
    mask = read_mask(sample.mask, sample.mask_threshold)
    if mask.shape != hw:
        raise InputError(f"mask is {mask.shape[0]}x{mask.shape[1]} but its image is "
                         f"{hw[0]}x{hw[1]}", sample.mask)
    return mask


def evaluate_maps(split: CategorySplit, maps_dir: str | Path, progress: bool | None = None
                  ) -> EvaluationResult:
    """Every metric of SPEC §6 for one category's maps, at original resolution."""
    maps_dir = Path(maps_dir)
    progress = sys.stderr.isatty() if progress is None else progress
    samples = split.evaluable_test
    if not samples:
        raise InputError("no test images with ground truth", split.root)
    sizes = {s.key: image_size(s.image) for s in samples}
    for s in samples:  # every map exists and fits before any work
        shape = _map_shape(map_path(maps_dir, split.name, s))
        if shape != sizes[s.key]:
            raise InputError(f"anomaly map is {'x'.join(map(str, shape))} but its image is "
                             f"{sizes[s.key][0]}x{sizes[s.key][1]}",
                             map_path(maps_dir, split.name, s))
    scores = read_scores(maps_dir / split.name / "scores.csv")
    evaluator = PixelEvaluator()
    defective = [s for s in samples if s.mask is not None]
    for s in tqdm(defective, desc="defect regions", unit="img", disable=not progress):
        evaluator.add_defects(read_map(map_path(maps_dir, split.name, s)), _mask(s, sizes[s.key]))
    image_scores, labels = [], []
    for s in tqdm(samples, desc="defect-free pixels", unit="img", disable=not progress):
        anomaly_map = read_map(map_path(maps_dir, split.name, s))
        mask = _mask(s, sizes[s.key])
        evaluator.add_normal(anomaly_map, mask)
        if scores is not None and s.key not in scores:
            raise InputError(f"no score for {s.key}", maps_dir / split.name / "scores.csv")
        image_scores.append(scores[s.key] if scores is not None else float(anomaly_map.max()))
        labels.append(s.is_anomalous)
    return EvaluationResult.combine(split.name, len(samples), auroc(image_scores, labels),
                                    evaluator.result())
