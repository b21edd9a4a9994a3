"""The maps folder of SPEC §5 and §7, the one place that knows its paths and formats.

A maps folder holds, per image key (a path relative to the folder, without suffix),
`<key>.tiff` (float32 map, exactly the image's H × W), `<key>_mask.png` (0/255, with
thresholds) and `<key>_overlay.png` (for people; a name no input image can have), and
once per folder `scores.csv` (`key,score[,verdict]`), `regions.csv` (one row per
predicted region) and `run.json` (the model that made the maps). Every writer is atomic;
every reader checks what it reads (shape, number type, finiteness) and names the file in
one line when something is wrong.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from PIL import Image

from l2bt.errors import InputError
from l2bt.metrics.evaluator import all_finite
from l2bt.prediction import Region
from l2bt.utils.atomic import atomic_file, write_text_atomic

SCORES_FILE = "scores.csv"
REGIONS_FILE = "regions.csv"
RUN_FILE = "run.json"  # what made the maps (the model's description), written by predict
MAP_SUFFIX = ".tiff"
MASK_SUFFIX = "_mask.png"
OVERLAY_SUFFIX = "_overlay.png"
REGION_COLUMNS = ("key", "region", "area_px", "x0", "y0", "x1", "y1", "max_score", "mean_score")
VERDICTS = {"good": False, "defective": True}


@dataclass(frozen=True)
class MapsFolder:
    """The paths of one maps folder (for `l2bt evaluate`, `<maps>/<category>`)."""

    root: Path

    def map(self, key: str) -> Path:
        return Path(self.root) / f"{key}{MAP_SUFFIX}"

    def mask(self, key: str) -> Path:
        """Where a predicted mask is written (SPEC §7)."""
        return Path(self.root) / f"{key}{MASK_SUFFIX}"

    def overlay(self, key: str) -> Path:
        return Path(self.root) / f"{key}{OVERLAY_SUFFIX}"

    @property
    def scores(self) -> Path:
        return Path(self.root) / SCORES_FILE

    @property
    def regions(self) -> Path:
        return Path(self.root) / REGIONS_FILE

    @property
    def run(self) -> Path:
        return Path(self.root) / RUN_FILE


# ---- writing ----------------------------------------------------------------------------


def map_tiff_bytes(anomaly_map: np.ndarray) -> bytes:
    """The map as the bytes of a float32 TIFF, exactly what `write_map` writes."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, anomaly_map.astype(np.float32, copy=False))
    return buffer.getvalue()


def write_map(path: Path, anomaly_map: np.ndarray, dtype: type = np.float32) -> None:
    """A TIFF of the map (float32 unless `dtype` says otherwise), written atomically."""
    with atomic_file(path) as tmp:
        tifffile.imwrite(tmp, anomaly_map.astype(dtype, copy=False))


def write_png(path: Path, picture: np.ndarray) -> None:
    """An (H, W) or (H, W, 3) uint8 array as a PNG, written atomically."""
    with atomic_file(path) as tmp:
        Image.fromarray(picture).save(tmp, format="PNG")


def write_mask(path: Path, mask: np.ndarray) -> None:
    """A uint8 PNG, 0 for good and 255 for defect pixels, written atomically."""
    write_png(path, mask.astype(np.uint8) * 255)


def write_scores(
    path: Path, scores: Mapping[str, float], verdicts: Mapping[str, str] | None = None
) -> None:
    """`scores.csv` with header `key,score` (+ `verdict`), the format `l2bt evaluate` reads."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["key", "score"] + (["verdict"] if verdicts else []))
    for key, score in scores.items():
        writer.writerow([key, repr(float(score))] + ([verdicts[key]] if verdicts else []))
    write_text_atomic(path, buffer.getvalue())


def write_regions(path: Path, regions: Mapping[str, Sequence[Region]]) -> None:
    """`regions.csv`: one row per predicted region (SPEC §7), x1 and y1 exclusive."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(REGION_COLUMNS)
    for key, found in regions.items():
        for r in found:
            writer.writerow(
                [
                    key,
                    r.region,
                    r.area_px,
                    r.x0,
                    r.y0,
                    r.x1,
                    r.y1,
                    repr(r.max_score),
                    repr(r.mean_score),
                ]
            )
    write_text_atomic(path, buffer.getvalue())


def write_run_description(path: Path, described: Mapping[str, object]) -> None:
    """`run.json`: the description of the model that made the maps (JSON, atomic)."""
    write_text_atomic(path, json.dumps(described, indent=1, default=str) + "\n")


# ---- reading ----------------------------------------------------------------------------


def read_run_description(path: Path) -> dict[str, Any] | None:
    """The maps' `run.json`, or None when there is none (maps from another tool)."""
    if not path.is_file():
        return None
    try:
        described = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"unreadable run description ({e})", path) from e
    if not isinstance(described, dict):
        raise InputError("run description is not a JSON object", path)
    return described


def read_map(path: Path) -> np.ndarray:
    """An (H, W) anomaly map: float32 kept as is, other real types widened to float64
    (exactly, so that no two scores merge); non-finite values are an error."""
    try:
        with tifffile.TiffFile(path) as tif:
            _one_page(tif, path)
            anomaly_map = tif.asarray()
    except InputError:
        raise
    except Exception as e:  # tifffile raises several types for broken files
        raise InputError(f"cannot read anomaly map ({e})", path) from e
    if anomaly_map.ndim == 3 and anomaly_map.shape[0] == 1:  # (1, H, W) -> (H, W)
        anomaly_map = anomaly_map[0]
    if anomaly_map.ndim != 2 or anomaly_map.dtype.kind not in "fiu":
        raise InputError(
            f"anomaly map must be a 2-D array of numbers, got "
            f"{anomaly_map.dtype} {anomaly_map.shape}",
            path,
        )
    anomaly_map = widened(anomaly_map)
    if not all_finite(anomaly_map):
        raise InputError("anomaly map has non-finite values (NaN or infinity)", path)
    return anomaly_map


def widened(values: np.ndarray) -> np.ndarray:
    """float32 kept as is, other real types widened to float64 (as `read_map`)."""
    return values if values.dtype == np.float32 else values.astype(np.float64)


def mapped_or_read(path: Path, hw: tuple[int, int]) -> np.ndarray:
    """The (H, W) map memory-mapped when the file allows it (nothing decoded yet), else
    read in full; either way checked to be its image's size. A mapping's values are not
    checked here (that reads every page): the caller checks what it reads."""
    if not path.is_file():
        raise InputError("anomaly map not found", path)
    try:
        mapped = tifffile.memmap(path, mode="r")
    except Exception:  # compressed, tiled, not a TIFF…: read_map says what is wrong
        anomaly_map = read_map(path)
        check_shape(path, anomaly_map.shape, hw)
        return anomaly_map
    if mapped.ndim == 3 and mapped.shape[0] == 1:  # (1, H, W) -> (H, W)
        mapped = mapped[0]
    check_shape(path, mapped.shape, hw)
    if mapped.dtype.kind not in "fiu":
        raise InputError(f"anomaly map must be a 2-D array of numbers, got {mapped.dtype}", path)
    return mapped


def check_map_shape(path: Path, expected_hw: tuple[int, int]) -> None:
    """The map exists and is exactly its image's height × width (reads the header only)."""
    if not path.is_file():
        raise InputError("anomaly map not found", path)
    check_shape(path, _header_shape(path), expected_hw)


def _header_shape(path: Path) -> tuple[int, ...]:
    """A one-page map file's array shape from its header, a leading axis of 1 dropped."""
    try:
        with tifffile.TiffFile(path) as tif:
            _one_page(tif, path)
            shape = tuple(int(n) for n in tif.series[0].shape)
    except InputError:
        raise
    except Exception as e:  # tifffile raises several types for broken files
        raise InputError(f"cannot read anomaly map ({e})", path) from e
    return shape[1:] if len(shape) == 3 and shape[0] == 1 else shape  # (1, H, W) -> (H, W)


def _one_page(tif: tifffile.TiffFile, path: Path) -> None:
    """A map file holds one page: a multi-page TIFF would be scored by its first page."""
    if len(tif.pages) > 1:
        raise InputError(f"anomaly map has {len(tif.pages)} pages; a map file holds one", path)


def check_shape(
    path: Path, shape: tuple[int, ...], expected_hw: tuple[int, int], what: str = "anomaly map"
) -> None:
    if tuple(shape) != tuple(expected_hw):
        raise InputError(
            f"{what} is {'x'.join(map(str, shape))} but its image is "
            f"{expected_hw[0]}x{expected_hw[1]}",
            path,
        )


def map_shape(path: Path) -> tuple[int, int]:
    """(height, width) of a map file, from its header."""
    shape = _header_shape(path)
    if len(shape) != 2:
        raise InputError(f"anomaly map must be 2-D, got shape {shape}", path)
    return int(shape[0]), int(shape[1])


@dataclass(frozen=True)
class ScoreRow:
    """One line of `scores.csv`."""

    key: str
    score: float
    verdict: str | None


def read_score_rows(path: Path) -> list[ScoreRow]:
    """Every line of `scores.csv`, in file order, checked as `read_score_table` checks."""
    table = read_score_table(path, ())
    if table is None:
        raise InputError(
            "no scores.csv here (not a maps folder written by l2bt predict)", Path(path).parent
        )
    verdicts = table.verdicts or {}
    return [
        ScoreRow(
            key, score, None if key not in verdicts else ("defective" if verdicts[key] else "good")
        )
        for key, score in table.scores.items()
    ]


def read_regions(path: Path) -> dict[str, tuple[Region, ...]]:
    """`regions.csv`'s regions by key; empty when the file is absent (no thresholds)."""
    if not Path(path).is_file():
        return {}
    found: dict[str, list[Region]] = {}
    with open(path, newline="") as f:
        try:
            for r in csv.DictReader(f):
                integers = (int(r[column]) for column in REGION_COLUMNS[1:7])
                scores = (float(r[column]) for column in REGION_COLUMNS[7:])
                found.setdefault(r["key"], []).append(Region(*integers, *scores))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"unreadable row ({e})", path) from e
    return {key: tuple(regions) for key, regions in found.items()}


@dataclass(frozen=True)
class ScoreTable:
    """`scores.csv`: a score per key, and a verdict per key (True: defective) when the
    file has a `verdict` column."""

    scores: dict[str, float]
    verdicts: dict[str, bool] | None


def read_scores(path: Path, keys: Sequence[str]) -> dict[str, float] | None:
    """Image scores from a `key,score` CSV, checked to cover `keys`; None if absent."""
    table = read_score_table(path, keys)
    return None if table is None else table.scores


def read_score_table(path: Path, keys: Sequence[str]) -> ScoreTable | None:
    """`scores.csv` (`key,score`, optionally `verdict`: good | defective on every line),
    checked to cover `keys`; None if absent."""
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8-sig")  # with or without a BOM (Excel's)
    except UnicodeDecodeError as e:
        raise InputError(f"not a UTF-8 text file (byte {e.start}: {e.reason})", path) from e
    if "\0" in text:
        raise InputError("not a text file (holds NUL bytes)", path)
    scores: dict[str, float] = {}
    verdicts: dict[str, bool] = {}
    with io.StringIO(text, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"key", "score"} <= set(reader.fieldnames):
            raise InputError("scores file needs the columns key,score", path)
        has_verdicts = "verdict" in reader.fieldnames
        for line, row in enumerate(reader, start=2):
            scores[row["key"]] = _score(row["score"], line, path)
            if has_verdicts:
                if row["verdict"] not in VERDICTS:
                    raise InputError(
                        f"line {line}: verdict {row['verdict']!r} is neither "
                        "'good' nor 'defective'",
                        path,
                    )
                verdicts[row["key"]] = VERDICTS[row["verdict"]]
    missing = [k for k in keys if k not in scores]
    if missing:
        raise InputError(
            f"no score for {missing[0]}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
            path,
        )
    return ScoreTable(scores, verdicts if has_verdicts else None)


def _score(text: str, line: int, path: Path) -> float:
    try:
        score = float(text)
    except (TypeError, ValueError) as e:
        raise InputError(f"line {line}: score {text!r} is not a number", path) from e
    if not math.isfinite(score):
        raise InputError(f"line {line}: score {text!r} is not finite", path)
    return score
