"""Scoring anomaly maps on disk against full-resolution ground truth.

Reads `<maps>/<category>/<key>.tiff` (SPEC §5) for every test sample that has ground
truth and streams maps and masks through `l2bt.metrics.StreamingEvaluator`: pass 1
reads the images with defects, pass 2 every image, one map in memory at a time. Before
any of that, every map is checked to exist and to match its image's size (TIFF headers
only), and `scores.csv` to name every image, so bad input fails in seconds with one line
naming the file. Image scores come from `<maps>/<category>/scores.csv` (header
`key,score`) when present, else the map maximum. Masks are never resized.
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile
from tqdm.auto import tqdm

from l2bt.data.image_io import image_size, read_mask
from l2bt.data.sample import CategorySplit, Sample
from l2bt.errors import InputError
from l2bt.metrics import EvaluationResult, StreamingEvaluator


def map_path(maps_dir: Path, category: str, sample: Sample) -> Path:
    return Path(maps_dir) / category / f"{sample.key}.tiff"


def evaluate_maps(split: CategorySplit, maps_dir: str | Path, progress: bool = True
                  ) -> EvaluationResult:
    """Every metric of SPEC §6 for one category's maps, at original resolution.

    `progress` shows bars on stderr, and only when it is a terminal.
    """
    maps_dir = Path(maps_dir)
    samples = split.evaluable_test
    if not samples:
        raise InputError("no test images with ground truth", split.root)
    paths = {s.key: map_path(maps_dir, split.name, s) for s in samples}
    sizes = {s.key: image_size(s.image) for s in samples}
    for s in samples:
        check_map_shape(paths[s.key], sizes[s.key])
    scores = read_scores(maps_dir / split.name / "scores.csv", [s.key for s in samples])
    show = progress and sys.stderr.isatty()
    evaluator = StreamingEvaluator()
    with_defects = [s for s in samples if s.mask is not None]
    for s in tqdm(with_defects, desc="pass 1/2, defect pixels", unit="img", disable=not show):
        evaluator.add_defects(read_map(paths[s.key]), sample_mask(s, sizes[s.key]))
    for s in tqdm(samples, desc="pass 2/2, every pixel", unit="img", disable=not show):
        evaluator.add(read_map(paths[s.key]), sample_mask(s, sizes[s.key]),
                      score=None if scores is None else scores[s.key],
                      anomalous=s.is_anomalous)
    return evaluator.result(split.name)


def check_map_shape(path: Path, expected_hw: tuple[int, int]) -> None:
    """The map exists and is exactly its image's height × width (reads the header only)."""
    if not path.is_file():
        raise InputError("anomaly map not found", path)
    try:
        with tifffile.TiffFile(path) as tif:
            shape = tuple(tif.series[0].shape)
    except Exception as e:  # tifffile raises several types for broken files
        raise InputError(f"cannot read anomaly map ({e})", path) from e
    shape = shape[1:] if len(shape) == 3 and shape[0] == 1 else shape  # (1, H, W) -> (H, W)
    if shape != tuple(expected_hw):
        raise InputError(f"anomaly map is {'x'.join(map(str, shape))} but its image is "
                         f"{expected_hw[0]}x{expected_hw[1]}", path)


def read_map(path: Path) -> np.ndarray:
    """An (H, W) anomaly map: float32 kept as is, other real types widened to float64
    (exactly, so that no two scores merge); non-finite values are an error."""
    try:
        anomaly_map = tifffile.imread(path)
    except Exception as e:  # tifffile raises several types for broken files
        raise InputError(f"cannot read anomaly map ({e})", path) from e
    if anomaly_map.ndim == 3 and anomaly_map.shape[0] == 1:  # (1, H, W) -> (H, W)
        anomaly_map = anomaly_map[0]
    if anomaly_map.ndim != 2 or anomaly_map.dtype.kind not in "fiu":
        raise InputError(f"anomaly map must be a 2-D array of numbers, got "
                         f"{anomaly_map.dtype} {anomaly_map.shape}", path)
    if anomaly_map.dtype != np.float32:
        anomaly_map = anomaly_map.astype(np.float64)
    if not np.isfinite(anomaly_map).all():
        raise InputError("anomaly map has non-finite values (NaN or infinity)", path)
    return anomaly_map


def sample_mask(sample: Sample, hw: tuple[int, int]) -> np.ndarray:
    """A sample's (H, W) bool ground truth; all False for a defect-free image."""
    if sample.mask is None:
        return np.zeros(hw, dtype=bool)
    mask = read_mask(sample.mask, sample.mask_threshold)
    if mask.shape != tuple(hw):
        raise InputError(f"mask is {mask.shape[0]}x{mask.shape[1]} but its image is "
                         f"{hw[0]}x{hw[1]}", sample.mask)
    return mask


def read_scores(path: Path, keys: Sequence[str]) -> dict[str, float] | None:
    """Image scores from a `key,score` CSV, checked to cover `keys`; None if absent."""
    if not path.is_file():
        return None
    scores: dict[str, float] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"key", "score"} <= set(reader.fieldnames):
            raise InputError("scores file needs the columns key,score", path)
        for line, row in enumerate(reader, start=2):
            try:
                score = float(row["score"])
            except (TypeError, ValueError) as e:
                raise InputError(f"line {line}: score {row['score']!r} is not a number",
                                 path) from e
            if not math.isfinite(score):
                raise InputError(f"line {line}: score {row['score']!r} is not finite", path)
            scores[row["key"]] = score
    missing = [k for k in keys if k not in scores]
    if missing:
        raise InputError(f"no score for {missing[0]}"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""), path)
    return scores
