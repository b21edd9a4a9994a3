"""A few overlays per benchmark job, for people to look at: the test images with the
highest, the median and the lowest image score in the job's `scores.csv`.

Each is drawn as `l2bt predict` draws overlays (the map over the image, predicted regions
outlined, colour bar and score below) and written where predict writes them,
`<key>_overlay.png` beside the map, a name no input image can have and the one that
`l2bt view` links; the three share one colour scale, so they compare by colour.
`overlays.json` in the same folder says which key is which. Maps and scores are
untouched: the folder stays a SPEC §5 maps folder.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from l2bt.data.image_io import read_image
from l2bt.decisions.decide import decide
from l2bt.decisions.thresholds import Thresholds
from l2bt.errors import InputError
from l2bt.maps.layout import MapsFolder, read_map, write_png
from l2bt.maps.overlay import OverlayStyle, image_threshold, overlay_picture
from l2bt.maps.tables import ScoreRow, read_score_table
from l2bt.prediction import Prediction
from l2bt.utils.atomic import write_text_atomic

OVERLAYS_FILE = "overlays.json"


def ranked_keys(rows: Sequence[ScoreRow]) -> dict[str, str]:
    """{"highest", "median", "lowest"} -> key, by image score (ties: by key); the median
    of an even number of images is the lower-scoring of the middle two."""
    ordered = sorted(rows, key=lambda row: (-row.score, row.key))
    return {
        "highest": ordered[0].key,
        "median": ordered[len(ordered) // 2].key,
        "lowest": ordered[-1].key,
    }


def write_overlays(
    maps_dir: Path, images: Mapping[str, Path], thresholds: Thresholds | None
) -> dict[str, str]:
    """Overlays of the highest-, median- and lowest-scoring images of a maps folder
    (`images`: each key's test image), and `overlays.json`; which key is which."""
    folder = MapsFolder(maps_dir)
    table = read_score_table(folder.scores)
    if table is None:
        raise InputError("no scores.csv in the job's maps folder", folder.root)
    rows = table.rows()
    chosen = ranked_keys(rows)
    scores = {row.key: row.score for row in rows}
    maps = {key: read_map(folder.map(key)) for key in dict.fromkeys(chosen.values())}
    style = OverlayStyle(_shared_range(list(maps.values())), image_threshold(thresholds))
    for key, anomaly_map in maps.items():
        prediction = decide(Prediction(anomaly_map, scores[key]), thresholds)
        write_png(folder.overlay(key), overlay_picture(read_image(images[key]), prediction, style))
    write_text_atomic(folder.root / OVERLAYS_FILE, json.dumps(chosen, indent=1) + "\n")
    return chosen


def _shared_range(maps: Sequence[np.ndarray]) -> tuple[float, float]:
    return min(float(m.min()) for m in maps), max(float(m.max()) for m in maps)
