"""`l2bt view`: the page lists every image in score order with the numbers of scores.csv
and regions.csv, its thumbnails share one colour scale, it reads benchmark folders, a real
headless browser renders it, and annotated overlays carry their colour bar and score."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np
import pytest
import tifffile
from matplotlib import colormaps
from PIL import Image

from helpers import fit_toy, write_mvtec_tree
from l2bt.cli import main
from l2bt.config import TeacherConfig, TrainConfig
from l2bt.decisions.thresholds import Thresholds
from l2bt.errors import InputError
from l2bt.maps.overlay import annotate, colour_bar_height
from l2bt.maps.tables import write_regions, write_scores
from l2bt.prediction import Region
from l2bt.run import NormalScores, RunDescription
from l2bt.run import write_run as record_file
from l2bt.view.gallery import THUMB_PX
from l2bt.view.page import write_page

# (key, height, width): odd sizes, a space and an ampersand in a key (links, escaping)
KEYS = (
    ("test/crack/000", 37, 53),
    ("test/crack/001", 64, 48),
    ("test/good/000", 20, 90),
    ("test/good/001", 41, 41),
    ("test/crack & dent/002", 33, 29),
    ("test/good/002", 8, 8),
)
IMAGE_THRESHOLD = 0.5


def write_maps(folder: Path, keys=KEYS, seed: int = 0, verdicts: bool = True) -> dict:
    """Random maps, scores (one tie), verdicts and a region per defective image; the
    scores as written (key -> score), the regions (key -> rows)."""
    rng = np.random.default_rng(seed)
    scores = {key: float(rng.random()) for key, _, _ in keys}
    if len(keys) > 3:
        scores[keys[3][0]] = scores[keys[1][0]]  # a tie: broken by key
    regions: dict[str, list[Region]] = {}
    for key, height, width in keys:
        path = folder / f"{key}.tiff"
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, rng.random((height, width)).astype(np.float32))
        if scores[key] > IMAGE_THRESHOLD:
            box = Region(1, 6, 1, 2, 4, 4, scores[key], scores[key] / 2)
            regions[key] = [box, Region(2, 1, 0, 0, 1, 1, 0.9, 0.9)]
    verdict = {k: "defective" if s > IMAGE_THRESHOLD else "good" for k, s in scores.items()}
    write_scores(folder / "scores.csv", scores, verdict if verdicts else None)
    if verdicts:
        write_regions(folder / "regions.csv", {k: regions.get(k, []) for k in scores})
    return {"scores": scores, "regions": regions}


def write_run(folder: Path, image: float = IMAGE_THRESHOLD, pixel: float = 0.75) -> Path:
    """A run folder's record (config.json) with these thresholds and the scale 0 to 1."""
    folder.mkdir(parents=True)
    names = tuple(f"{i}.png" for i in range(99))
    record = RunDescription(
        "l2bt",
        TeacherConfig("dinov2_vits14", "random", 56),
        "random",
        384,
        train=TrainConfig(),
        normal_scores=NormalScores(0.0, 1.0),
        thresholds=Thresholds(image, pixel, 0.01, 0.01, 99, names),
    )
    record_file(folder, record)
    return folder


def page_data(page: Path) -> dict:
    """The JSON block the page's script draws from."""
    found = re.search(
        r'<script type="application/json" id="l2bt-data">(.*?)</script>', page.read_text(), re.S
    )
    assert found is not None
    return json.loads(found.group(1))


def csv_scores(path: Path) -> list[tuple[str, float]]:
    with path.open(newline="") as f:
        return [(r["key"], float(r["score"])) for r in csv.DictReader(f)]


def most_anomalous_first(rows: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """The reference order: by score descending, ties by key."""
    return sorted(rows, key=lambda r: (-r[1], r[0]))


def thumbnail(uri: str) -> Image.Image:
    assert uri.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB")


def test_the_page_lists_every_key_in_score_order_with_the_numbers_of_the_csv_files(tmp_path):
    maps = tmp_path / "maps" / "toy"
    written = write_maps(maps)
    run = write_run(tmp_path / "run", image=IMAGE_THRESHOLD, pixel=0.75)
    summary = write_page(maps, run=run)
    assert summary.path == maps / "index.html" and summary.n_images == len(KEYS)
    (section,) = page_data(summary.path)["sections"]
    expected = most_anomalous_first(csv_scores(maps / "scores.csv"))
    assert [(e["key"], e["score"]) for e in section["entries"]] == expected
    assert section["image_threshold"] == IMAGE_THRESHOLD and section["pixel_threshold"] == 0.75
    with (maps / "regions.csv").open(newline="") as f:
        region_rows = list(csv.DictReader(f))
    for entry in section["entries"]:
        assert entry["verdict"] == ("defective" if entry["score"] > IMAGE_THRESHOLD else "good")
        mine = [r for r in region_rows if r["key"] == entry["key"]]
        assert entry["regions"] == [
            [
                int(r["region"]),
                int(r["area_px"]),
                int(r["x0"]),
                int(r["y0"]),
                int(r["x1"]),
                int(r["y1"]),
                float(r["max_score"]),
                float(r["mean_score"]),
            ]
            for r in mine
        ]
        for name in ("map", "mask"):  # links relative to the page, URL-quoted
            if entry[name] is not None:
                assert (summary.path.parent / unquote(entry[name])).is_file()
        assert entry["map"].endswith(".tiff") and entry["overlay"] is None
    assert len(written["regions"]) > 0


@pytest.mark.usefixtures("feature_cache")
def test_a_predict_folder_shows_its_runs_thresholds_and_source_images(tmp_path):
    """What predict recorded (run.json) is on the page without --model: the run's image
    and mask thresholds, and each key's source image for the detail pane."""
    write_mvtec_tree(tmp_path / "data", n_train=12)
    run, out = tmp_path / "run", tmp_path / "maps"
    assert (
        fit_toy(tmp_path / "data", run, "--calibration", "0.25", "--false-alarm-rate", "0.3") == 0
    )
    assert (
        main(["predict", "--model", str(run), "--out", str(out), str(tmp_path / "data/toy/test")])
        == 0
    )
    assert main(["view", str(out)]) == 0
    (section,) = page_data(out / "index.html")["sections"]
    thresholds = json.loads((run / "config.json").read_text())["thresholds"]
    assert section["image_threshold"] == thresholds["image"]
    assert section["pixel_threshold"] == thresholds["pixel"]
    assert len(section["entries"]) == 6
    for entry in section["entries"]:
        assert entry["image"] is not None
        shown = (out / unquote(entry["image"])).resolve()
        assert shown == (tmp_path / "data/toy" / f"{entry['key']}.png").resolve()


def test_thumbnails_are_small_and_share_one_colour_scale(tmp_path):
    maps = tmp_path / "maps"
    keys = (("test/a/high", 30, 300), ("test/a/low", 200, 20), ("test/a/mid", 50, 50))
    write_maps(maps, keys)
    for (key, height, width), value in zip(keys, (9.0, -3.0, None), strict=True):
        if value is not None:  # constant maps at the section's ends
            tifffile.imwrite(maps / f"{key}.tiff", np.full((height, width), value, np.float32))
    (section,) = page_data(write_page(maps).path)["sections"]
    assert (section["low"], section["high"]) == (-3.0, 9.0)
    by_key = {e["key"]: e for e in section["entries"]}
    for key, height, width in keys:
        picture = thumbnail(by_key[key]["thumb"])
        assert max(picture.size) <= THUMB_PX
        assert abs(picture.width / picture.height - width / height) < 0.1 * width / height
        assert by_key[key]["size"] == [width, height] and by_key[key]["drawn"]
    for key, end in (("test/a/high", 1.0), ("test/a/low", 0.0)):
        mean = np.asarray(thumbnail(by_key[key]["thumb"]), np.float32).mean(axis=(0, 1))
        assert np.abs(mean - np.array(colormaps["jet"](end)[:3]) * 255).max() < 12


def test_an_overlay_file_is_linked_and_its_picture_is_the_thumbnail(tmp_path):
    maps = tmp_path / "maps"
    write_maps(maps, KEYS[:2])
    key, height, width = KEYS[0]
    picture = annotate(np.full((height, width, 3), (0, 200, 0), np.uint8), 0.0, 1.0, 0.7, 0.5)
    Image.fromarray(picture).save(maps / f"{key}_overlay.png")
    out = tmp_path / "elsewhere" / "page.html"
    summary = write_page(maps, out)
    assert summary.path == out and out.is_file() and not (maps / "index.html").exists()
    entries = {e["key"]: e for e in page_data(out)["sections"][0]["entries"]}
    mine = entries[key]
    assert (out.parent / unquote(mine["overlay"])).resolve() == (maps / f"{key}_overlay.png")
    assert mine["overlay_size"] == [width, height + colour_bar_height(width)]
    assert not mine["drawn"] and entries[KEYS[1][0]]["drawn"]
    small = np.asarray(thumbnail(mine["thumb"]), np.float32)  # the green picture, no bar
    assert small.shape[0] / small.shape[1] == pytest.approx(height / width, rel=0.1)
    assert np.abs(small.mean(axis=(0, 1)) - (0, 200, 0)).max() < 12


def test_a_benchmark_folder_has_a_section_per_method_and_category(tmp_path):
    data = tmp_path / "data"
    write_mvtec_tree(data, "toy")
    bench = tmp_path / "bench"
    (bench / "benchmark.json").parent.mkdir()
    (bench / "benchmark.json").write_text(json.dumps({"data": str(data), "dataset": "mvtec_ad"}))
    test_images = sorted((data / "toy" / "test").glob("*/*.png"))
    keys = tuple(
        (p.relative_to(data / "toy").with_suffix("").as_posix(), *Image.open(p).size[::-1])
        for p in test_images
    )
    for seed, method in enumerate(("l2bt", "patchcore")):
        write_maps(bench / "maps" / method / "toy", keys, seed, verdicts=method == "l2bt")
    result = {
        "category": "toy",
        "i_auroc": 0.875,
        "aupro": {"0.3": {"all": 0.5, "q1": None}},
        "thresholds": {"image": 0.25, "pixel": 0.5, "segmentation": 0.625},
    }
    (bench / "results" / "l2bt").mkdir(parents=True)
    (bench / "results" / "l2bt" / "toy.json").write_text(json.dumps(result))
    summary = write_page(bench)
    sections = page_data(summary.path)["sections"]
    assert [s["title"] for s in sections] == ["l2bt / toy", "patchcore / toy"]
    assert summary.n_images == 2 * len(keys)
    first, second = sections
    assert (first["image_threshold"], first["pixel_threshold"]) == (0.25, 0.625)
    assert first["facts"] == [["I-AUROC", "0.8750"], ["AUPRO@30% all", "0.5000"]]
    assert second["image_threshold"] is None and second["facts"] == []
    assert all(e["verdict"] is None for e in second["entries"])
    for section, method in zip(sections, ("l2bt", "patchcore"), strict=True):
        expected = most_anomalous_first(csv_scores(bench / "maps" / method / "toy" / "scores.csv"))
        assert [(e["key"], e["score"]) for e in section["entries"]] == expected
        for entry in section["entries"]:  # the source image, found through the data root
            assert (bench / unquote(entry["image"])).resolve() == (
                data / "toy" / f"{entry['key']}.png"
            ).resolve()
    with pytest.raises(InputError, match="--model"):
        write_page(bench, run=write_run(tmp_path / "run"))


@pytest.mark.parametrize("layout", ["missing", "file", "no scores"])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, layout):
    target = tmp_path / "target"
    if layout == "file":
        target.write_text("not a folder")
    elif layout == "no scores":
        (target / "sub").mkdir(parents=True)
    out = tmp_path / "page.html"
    assert main(["view", str(target), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("l2bt view: error: ") and error.count("\n") == 1
    assert str(target) in error and not out.exists()


def test_unreadable_scores_name_the_file(tmp_path):
    (tmp_path / "scores.csv").write_text("key,score\ntest/a,high\n")
    with pytest.raises(InputError, match=r"scores\.csv: line 2: score 'high' is not a number"):
        write_page(tmp_path)


def test_the_command_writes_index_html_beside_a_folder_of_maps_folders(tmp_path, capsys):
    for seed, category in enumerate(("bottle", "cable")):
        write_maps(tmp_path / category, KEYS[:3], seed)
    assert main(["view", str(tmp_path)]) == 0
    assert "6 images in 2 section(s)" in capsys.readouterr().out
    titles = [s["title"] for s in page_data(tmp_path / "index.html")["sections"]]
    assert titles == ["bottle", "cable"]


class TileReader(HTMLParser):
    """The tiles (key, score) in document order, and the detail panel's score."""

    def __init__(self) -> None:
        super().__init__()
        self.tiles: list[tuple[str, float]] = []
        self.detail_scores: list[float] = []
        self.in_detail = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        found = dict(attrs)
        if found.get("id") == "detail":
            self.in_detail = True
        if tag == "figure" and "tile" in (found.get("class") or "").split():
            self.tiles.append((found["data-key"], float(found["data-score"])))
        elif self.in_detail and "data-score" in found:
            self.detail_scores.append(float(found["data-score"]))


def chromium(
    page: Path, tmp_path: Path, *flags: str, fragment: str = ""
) -> subprocess.CompletedProcess:
    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("chromium not installed (apt-get install chromium)")
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,900",
        *flags,
        page.resolve().as_uri() + fragment,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)


def test_a_headless_browser_renders_the_tiles_in_score_order(tmp_path):
    maps = tmp_path / "maps"
    write_maps(maps)
    page = write_page(maps, run=write_run(tmp_path / "run")).path
    dom = chromium(page, tmp_path, "--dump-dom").stdout
    reader = TileReader()
    reader.feed(dom)
    expected = most_anomalous_first(csv_scores(maps / "scores.csv"))
    assert reader.tiles == expected  # drawn by the script: the source has no tile
    assert reader.detail_scores == [expected[0][1]]  # the most anomalous, selected
    assert 'class="tile' not in page.read_text()
    assert dom.count('class="cut"') == 1  # the image threshold line, drawn once
    last_key, last_score = expected[-1]  # an address naming an image selects it
    reader = TileReader()
    reader.feed(chromium(page, tmp_path, "--dump-dom", fragment="#" + quote(last_key)).stdout)
    assert reader.detail_scores == [last_score]
    shot = tmp_path / "shot.png"
    chromium(page, tmp_path, f"--screenshot={shot}")
    pixels = np.asarray(Image.open(shot).convert("L"), np.float32)
    assert pixels.shape == (900, 1280) and pixels.std() > 10
