"""The maps folder of SPEC §5 and §7, the one place that knows its paths and formats.

A maps folder holds, per image key (a path relative to the folder, without suffix),
`<key>.tiff` (float32 map, exactly the image's H × W), `<key>_mask.png` (0/255, with
thresholds) and `<key>_overlay.png` (for people; a name no input image can have), and
once per folder `scores.csv` and `regions.csv` (`maps/tables.py`) and `run.json`: the
record of the model that made the maps, where it was loaded from and each key's source
image (written by predict before its first map). Every writer is atomic; every reader
checks what it reads (shape, number type, finiteness) and names the file in one line
when something is wrong.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from l2bt.errors import InputError
from l2bt.maps.tables import REGIONS_FILE, SCORES_FILE
from l2bt.metrics.checks import all_finite
from l2bt.run import RUN_FORMAT, RunDescription
from l2bt.utils.atomic import atomic_file, write_text_atomic

RUN_FILE = "run.json"  # what made the maps (the model's record), written by predict
MAPS_FORMAT = "l2bt-maps/1"
MAP_SUFFIX = ".tiff"
MASK_SUFFIX = "_mask.png"
OVERLAY_SUFFIX = "_overlay.png"
PNG_COMPRESSION = 1  # zlib level of masks and overlays (Pillow's default is 6)


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
    """An (H, W) or (H, W, 3) uint8 array as a PNG, written atomically, at zlib level
    PNG_COMPRESSION: several times faster than Pillow's default, in more bytes (a file for
    people beside the map that is the data; benchmarks/README.md)."""
    with atomic_file(path) as tmp:
        Image.fromarray(picture).save(tmp, format="PNG", compress_level=PNG_COMPRESSION)


def write_mask(path: Path, mask: np.ndarray) -> None:
    """A uint8 PNG, 0 for good and 255 for defect pixels, written atomically."""
    write_png(path, mask.astype(np.uint8) * 255)


@dataclass(frozen=True)
class MapsRecord:
    """What `run.json` says: the record of the model that made the maps, where it was
    loaded from (`model`), and each key's source image (`images`)."""

    record: RunDescription
    model: str | None = None
    images: dict[str, str] = field(default_factory=dict)


def write_maps_record(path: Path, made_by: MapsRecord) -> None:
    """`run.json`, atomically."""
    described = {
        "format": MAPS_FORMAT,
        "model": made_by.model,
        "run": made_by.record.to_dict(),
        "images": made_by.images,
    }
    write_text_atomic(path, json.dumps(described, indent=1) + "\n")


def read_maps_record(path: Path) -> MapsRecord | None:
    """The maps' `run.json`, or None when there is none (maps from another tool); also
    the layout predict wrote before 0.2 (the model's config.json and "model" in one)."""
    if not path.is_file():
        return None
    try:
        described = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"unreadable run description ({e})", path) from e
    if not isinstance(described, dict):
        raise InputError("run description is not a JSON object", path)
    model = described.get("model")
    try:
        if described.get("format") == RUN_FORMAT:  # the earlier, flat layout
            flat = {k: v for k, v in described.items() if k not in ("model", "engine")}
            return MapsRecord(RunDescription.from_dict(flat), model)
        if described.get("format") != MAPS_FORMAT:
            raise InputError(f"unknown format {described.get('format')!r}")
        images = {str(k): str(v) for k, v in (described.get("images") or {}).items()}
        return MapsRecord(RunDescription.from_dict(described.get("run")), model, images)
    except InputError as e:
        raise InputError(e.problem, path) from e


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


def earlier_prediction(out: Path) -> Path | None:
    """The file showing `out` holds a prediction, finished or not (`run.json`, written
    before the first map; or `scores.csv`), or None."""
    folder = MapsFolder(Path(out))
    return next((p for p in (folder.run, folder.scores) if p.is_file()), None)
