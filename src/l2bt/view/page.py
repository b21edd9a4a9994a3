"""One self-contained HTML page to browse a maps folder or a benchmark (`l2bt view`).

The page holds its style, its script and its data (one JSON block: per section the
entries in score order, thumbnails as data URIs, numbers as written in scores.csv and
regions.csv) and links the full-size files by paths relative to itself, so it opens
offline from file:// and stays a thumbnail per image however large the pictures are.
It is written atomically: a reader sees the old page or the new one.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from l2bt.maps.layout import MapsFolder
from l2bt.maps.tables import read_score_table
from l2bt.utils.atomic import write_text_atomic
from l2bt.utils.progress import progress_bar
from l2bt.view.gallery import Entry, Section, build_section, find_sections

JET_STOPS = 11  # colour stops of the CSS gradient that mirrors matplotlib's 'jet'


@dataclass(frozen=True)
class PageSummary:
    path: Path
    n_sections: int
    n_images: int


def write_page(folder: Path, out: Path | None = None, run: Path | None = None) -> PageSummary:
    """Build the page of `folder` into `out` (default `folder/index.html`); `run`: a run
    folder whose thresholds and normal colour range apply to a maps folder."""
    folder = Path(folder)
    sources = find_sections(folder, run)
    out = Path(out) if out is not None else folder / "index.html"
    total = sum(_count_rows(s.maps_dir) for s in sources)
    with progress_bar(total=total, desc="view", unit="img") as bar:
        sections = [
            build_section(source, out.parent, step=lambda: bar.update(1)) for source in sources
        ]
    write_text_atomic(out, render_page(sections, f"l2bt · {folder.resolve().name}"))
    return PageSummary(out, len(sections), sum(len(s.entries) for s in sections))


def _count_rows(maps_dir: Path) -> int:
    table = read_score_table(MapsFolder(maps_dir).scores)
    return 0 if table is None else len(table.scores)


def asset(name: str) -> str:
    """A file of the page's package data (`assets/page.css`, `assets/page.js`)."""
    return (resources.files("l2bt.view") / "assets" / name).read_text(encoding="utf-8")


def render_page(sections: list[Section], title: str) -> str:
    data = {
        "title": title,
        "jet": _jet_gradient(),
        "sections": [_section_data(s) for s in sections],
    }
    # "</" inside the JSON could close the script element: escape it for HTML only.
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    heading = html.escape(title)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{heading}</title>
<style>{asset("page.css")}</style>
</head>
<body>
<header><h1>{heading}</h1>
<input id="filter" type="search" placeholder="filter by key">
<label><input id="defective-only" type="checkbox"> defective only</label></header>
<noscript><p>This page draws its contents with JavaScript.</p></noscript>
<main><div id="sections"></div><aside id="detail"></aside></main>
<script type="application/json" id="l2bt-data">{payload}</script>
<script>{asset("page.js")}</script>
</body>
</html>
"""


def _section_data(section: Section) -> dict[str, Any]:
    low, high = section.colour_range
    return {
        "title": section.title,
        "image_threshold": _finite(section.image_threshold),
        "pixel_threshold": _finite(section.pixel_threshold),
        "low": _finite(low),
        "high": _finite(high),
        "facts": [list(f) for f in section.facts],
        "entries": [_entry_data(e) for e in section.entries],
    }


def _entry_data(entry: Entry) -> dict[str, Any]:
    return {
        "key": entry.key,
        "score": _finite(entry.score),
        "verdict": entry.verdict,
        "size": list(entry.size),
        "thumb": entry.thumbnail,
        "drawn": entry.drawn_here,
        "overlay": entry.overlay,
        "overlay_size": None if entry.overlay_size is None else list(entry.overlay_size),
        "image": entry.image,
        "mask": entry.mask,
        "map": entry.map,
        "regions": [
            [
                r.region,
                r.area_px,
                r.x0,
                r.y0,
                r.x1,
                r.y1,
                _finite(r.max_score),
                _finite(r.mean_score),
            ]
            for r in entry.regions
        ],
    }


def _finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: those become null (shown as a dash)."""
    return None if value is None or not math.isfinite(value) else float(value)


def _jet_gradient() -> str:
    from matplotlib import colormaps

    stops = []
    for i in range(JET_STOPS):
        r, g, b, _ = colormaps["jet"](i / (JET_STOPS - 1))
        stops.append(
            f"rgb({round(r * 255)},{round(g * 255)},{round(b * 255)}) "
            f"{100 * i / (JET_STOPS - 1):g}%"
        )
    return ", ".join(stops)
