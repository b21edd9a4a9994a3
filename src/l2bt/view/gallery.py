"""What `l2bt view` shows: the images of a maps folder or a benchmark, as sections of
entries (key, score, verdict, regions, a small thumbnail, links to the full-size files).

A maps folder (`scores.csv` beside the maps, SPEC §5) is one section, a folder of such
folders one per sub-folder, a benchmark folder one per method and category. What a
section knows of the model that made it (thresholds, colour scale, source images) comes
from its `run.json` (the record predict writes), or from the run folder given with
`--model`. Entries are sorted by score, most anomalous first (ties by key). Each thumbnail
(at most THUMB_PX on its longer side) is the image's `<key>_overlay.png` when there is
one, else the map in 'jet' colours over the source image when it is at hand, else the map
alone; those drawn here share one colour scale per section (the run's, else the
section's lowest to highest map value), so colours compare across images. Maps are read
once: kept as 8-bit levels of their own range until the section's scale is known, so
memory stays a thumbnail per image.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from l2bt.errors import InputError
from l2bt.maps.layout import MapsFolder, map_shape, read_map, read_maps_record
from l2bt.maps.tables import SCORES_FILE, ScoreRow, read_regions, read_score_table
from l2bt.prediction import Region
from l2bt.run import RunDescription, read_run

THUMB_PX = 160


@dataclass(frozen=True)
class SectionSource:
    """Where one section's files are and what is known about them before reading maps."""

    title: str
    maps_dir: Path
    image_threshold: float | None = None
    pixel_threshold: float | None = None
    colour_range: tuple[float, float] | None = None  # None: the section's own map range
    images: dict[str, Path] = field(default_factory=dict)  # key -> source image, where known
    facts: tuple[tuple[str, str], ...] = ()  # (name, value) lines, e.g. metrics
    bit_depth: int | None = None  # the run's, to read the source images as it did


@dataclass(frozen=True)
class Entry:
    key: str
    score: float
    verdict: str | None
    regions: tuple[Region, ...]
    size: tuple[int, int]  # the map's (width, height)
    thumbnail: str  # data URI
    drawn_here: bool  # the thumbnail uses the section's colour scale (not an overlay file)
    overlay: str | None  # links relative to the page
    overlay_size: tuple[int, int] | None  # the overlay file's (width, height)
    image: str | None
    mask: str | None
    map: str


@dataclass(frozen=True)
class Section:
    title: str
    entries: tuple[Entry, ...]
    image_threshold: float | None
    pixel_threshold: float | None
    colour_range: tuple[float, float]
    facts: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _Preview:
    """Pass one's result for an entry: a finished thumbnail, or the parts to colour."""

    size: tuple[int, int]
    thumbnail: str | None = None
    overlay_size: tuple[int, int] | None = None
    levels: np.ndarray | None = None  # (h, w) uint8, the small map in 256 steps of its range
    low: float = 0.0
    high: float = 0.0
    picture: np.ndarray | None = None  # (h, w, 3) uint8, the small source image


def find_sections(folder: Path, run: Path | None = None) -> list[SectionSource]:
    """The sections of a maps folder, a folder of maps folders or a benchmark folder;
    `run`: the run folder whose thresholds and normal range apply (maps folders only)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("not a folder", folder)
    if (folder / "benchmark.json").is_file():
        if run is not None:
            raise InputError(
                "--model is for maps folders; a benchmark folder has its own thresholds", folder
            )
        return _benchmark_sections(folder)
    given = None if run is None else read_run(run)
    if (folder / SCORES_FILE).is_file():
        return [_maps_section(folder.resolve().name, folder, given)]
    inner = sorted(p.parent for p in folder.glob(f"*/{SCORES_FILE}"))
    if not inner:
        raise InputError("no scores.csv here nor in its sub-folders, and no benchmark.json", folder)
    return [_maps_section(p.name, p, given) for p in inner]


def _maps_section(title: str, folder: Path, given: RunDescription | None) -> SectionSource:
    """A predict folder's section: what its run.json (or the `--model` run) says."""
    made_by = read_maps_record(MapsFolder(folder).run)
    record = given or (None if made_by is None else made_by.record)
    images = {} if made_by is None else {k: Path(v) for k, v in made_by.images.items()}
    if record is None:
        return SectionSource(title, folder)
    thresholds = record.thresholds
    return SectionSource(
        title,
        folder,
        None if thresholds is None else thresholds.image,
        None if thresholds is None else thresholds.mask_threshold,
        record.colour_range,
        {key: path for key, path in images.items() if path.is_file()},
        bit_depth=record.bit_depth,
    )


def _benchmark_sections(folder: Path) -> list[SectionSource]:
    try:
        described = json.loads((folder / "benchmark.json").read_text())
    except json.JSONDecodeError as e:
        raise InputError(
            f"unreadable benchmark description ({e})", folder / "benchmark.json"
        ) from e
    sections = []
    for maps_dir in sorted(folder.glob(f"maps/*/*/{SCORES_FILE}")):
        category, method = maps_dir.parent.name, maps_dir.parent.parent.name
        result_path = folder / "results" / method / f"{category}.json"
        result = json.loads(result_path.read_text()) if result_path.is_file() else {}
        thresholds = result.get("thresholds") or {}
        sections.append(
            SectionSource(
                f"{method} / {category}",
                maps_dir.parent,
                thresholds.get("image"),
                thresholds.get("segmentation", thresholds.get("pixel")),
                images=_source_images(described, category),
                facts=_result_facts(result),
            )
        )
    if not sections:
        raise InputError(
            "a benchmark folder without maps (maps/<method>/<category>/scores.csv) yet", folder
        )
    return sections


def _source_images(described: dict[str, Any], category: str) -> dict[str, Path]:
    """The test images of a benchmark's category, by key; none when the data moved."""
    from l2bt.data import load_category

    try:
        split = load_category(described["data"], category, described.get("dataset", "mvtec_ad"))
    except (InputError, KeyError, TypeError):
        return {}
    return {s.key: s.image for s in split.test}


def _result_facts(result: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    figures = (
        ("I-AUROC", result.get("i_auroc")),
        ("AUPRO@30% all", (result.get("aupro") or {}).get("0.3", {}).get("all")),
        ("AUPRO@30% q1", (result.get("aupro") or {}).get("0.3", {}).get("q1")),
        ("F1", ((result.get("decisions") or {}).get("image") or {}).get("f1")),
    )
    return tuple(
        (name, f"{value:.4f}") for name, value in figures if isinstance(value, int | float)
    )


def build_section(
    source: SectionSource,
    page_dir: Path,
    workers: int = 4,
    step: Callable[[], object] | None = None,
) -> Section:
    """Read one section's maps (and overlays, images) into thumbnails and entries."""
    folder = MapsFolder(source.maps_dir)
    table = read_score_table(folder.scores)
    if table is None:
        raise InputError("no scores.csv here (not a maps folder of l2bt predict)", folder.root)
    rows = sorted(table.rows(), key=_most_anomalous_first)
    regions = read_regions(folder.regions)

    def preview(row: ScoreRow) -> _Preview:
        found = _preview(source, row.key)
        if step is not None:
            step()
        return found

    with ThreadPoolExecutor(workers) as pool:
        previews = list(pool.map(preview, rows))
    drawn = [p for p in previews if p.thumbnail is None]
    colour_range = source.colour_range or _common_range(drawn)
    entries = tuple(
        _entry(source, row, p, regions.get(row.key, ()), colour_range, page_dir)
        for row, p in zip(rows, previews, strict=True)
    )
    return Section(
        source.title,
        entries,
        source.image_threshold,
        source.pixel_threshold,
        colour_range,
        source.facts,
    )


def _most_anomalous_first(row: ScoreRow) -> tuple[float, str]:
    return (math.inf if math.isnan(row.score) else -row.score, row.key)


def _common_range(previews: Sequence[_Preview]) -> tuple[float, float]:
    if not previews:
        return (0.0, 1.0)
    return (min(p.low for p in previews), max(p.high for p in previews))


def _preview(source: SectionSource, key: str) -> _Preview:
    from PIL import Image

    folder = MapsFolder(source.maps_dir)
    map_path, overlay_path = folder.map(key), folder.overlay(key)
    if not map_path.is_file():
        raise InputError(f"no map for {key}, listed in scores.csv", map_path)
    if overlay_path.is_file():
        height, width = map_shape(map_path)
        with Image.open(overlay_path) as picture:
            overlay_size = picture.size
            top = picture.convert("RGB").crop((0, 0, picture.width, min(height, picture.height)))
        return _Preview((width, height), _data_uri(_shrink(top)), overlay_size)
    anomaly_map = read_map(map_path).astype(np.float32, copy=False)  # (H, W)
    height, width = anomaly_map.shape[:2]
    small = np.asarray(_shrink(Image.fromarray(anomaly_map)))  # (h, w) float32
    low, high = float(np.nanmin(small)), float(np.nanmax(small))
    levels = np.round((small - low) / max(high - low, 1e-12) * 255.0).astype(np.uint8)
    small_image = None
    image = source.images.get(key)
    if image is not None:
        from l2bt.data.image_io import read_image

        pixels = read_image(image, bit_depth=source.bit_depth)
        shrunk = Image.fromarray(pixels).resize(small.shape[::-1], Image.Resampling.BOX)
        small_image = np.asarray(shrunk)  # (h, w, 3)
    return _Preview((width, height), levels=levels, low=low, high=high, picture=small_image)


def _shrink(picture: Any) -> Any:
    """A PIL image scaled down (box filter) to at most THUMB_PX on its longer side."""
    from PIL import Image

    scale = min(1.0, THUMB_PX / max(picture.size))
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    return picture if size == picture.size else picture.resize(size, Image.Resampling.BOX)


def _coloured(preview: _Preview, colour_range: tuple[float, float]) -> str:
    from PIL import Image

    from l2bt.maps.overlay import overlay

    assert preview.levels is not None
    small = preview.low + preview.levels.astype(np.float32) / 255.0 * (preview.high - preview.low)
    if preview.picture is None:  # the map alone: 'jet' over black at full strength
        picture = overlay(np.zeros((*small.shape, 3), np.uint8), small, *colour_range, alpha=1.0)
    else:
        picture = overlay(preview.picture, small, *colour_range)
    return _data_uri(Image.fromarray(picture))


def _data_uri(picture: Any) -> str:
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _entry(
    source: SectionSource,
    row: ScoreRow,
    preview: _Preview,
    regions: tuple[Region, ...],
    colour_range: tuple[float, float],
    page_dir: Path,
) -> Entry:
    folder = MapsFolder(source.maps_dir)
    mask = folder.mask(row.key)
    image = source.images.get(row.key)
    return Entry(
        key=row.key,
        score=row.score,
        verdict=row.verdict,
        regions=regions,
        size=preview.size,
        thumbnail=preview.thumbnail or _coloured(preview, colour_range),
        drawn_here=preview.thumbnail is None,
        overlay=None if preview.overlay_size is None else link(folder.overlay(row.key), page_dir),
        overlay_size=preview.overlay_size,
        image=None if image is None else link(image, page_dir),
        mask=link(mask, page_dir) if mask.is_file() else None,
        map=link(folder.map(row.key), page_dir),
    )


def link(target: Path, page_dir: Path) -> str:
    """`target` as a URL relative to the page's folder (so the page opens from file://)."""
    relative = os.path.relpath(Path(target).resolve(), Path(page_dir).resolve())
    return quote(Path(relative).as_posix())
