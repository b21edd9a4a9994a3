"""predict_to_folder's pipeline (the next batch decoding, the previous one writing while
one is predicted): every output belongs to its own input whatever the batch size, the
tables follow the inputs' order, and a writer's error stops the run before the tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import l2bt.maps.predict as predict
from l2bt.anomaly_map import image_score
from l2bt.errors import InputError
from l2bt.maps.inputs import collect_inputs
from l2bt.maps.layout import MapsFolder, read_map
from l2bt.maps.predict import PredictOptions, predict_to_folder
from l2bt.maps.tables import read_score_table
from l2bt.prediction import Prediction
from l2bt.run import RunDescription


class PixelMeans:
    """A predictor whose map is each pixel's channel mean: a function of the image alone,
    so a map written under another image's key is seen at once."""

    record = RunDescription("pixel-means", teacher=None, weights_id=None, embed_dim=None)

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def predict_maps(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        self.batch_sizes.append(len(images))
        maps = [image.astype(np.float32).mean(axis=2) for image in images]
        return [Prediction(m, image_score(m)) for m in maps]


def write_images(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        shape = (5 + i, 9 + 2 * i, 3)  # every image its own size
        path = folder / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("batch_size", [1, 3, 7, 8])
def test_every_output_is_its_own_inputs(tmp_path: Path, batch_size: int) -> None:
    paths = write_images(tmp_path / "parts", 7)
    items = collect_inputs([tmp_path / "parts"])
    predictor = PixelMeans()
    summary = predict_to_folder(predictor, items, tmp_path / "maps", PredictOptions(batch_size))
    assert predictor.batch_sizes == [
        len(items[i : i + batch_size]) for i in range(0, 7, batch_size)
    ]
    folder = MapsFolder(tmp_path / "maps")
    expected = {}
    for item, path in zip(items, sorted(paths), strict=True):
        image = np.asarray(Image.open(path).convert("RGB"))
        truth = image.astype(np.float32).mean(axis=2)
        np.testing.assert_array_equal(read_map(folder.map(item.key)), truth)
        assert folder.overlay(item.key).is_file()
        expected[item.key] = image_score(truth)
    assert summary.scores == expected
    table = read_score_table(folder.scores, [item.key for item in items])
    assert table.scores == pytest.approx(expected)
    assert list(summary.scores) == [item.key for item in items]


def test_a_writers_error_stops_the_run_before_the_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_images(tmp_path / "parts", 6)
    items = collect_inputs([tmp_path / "parts"])
    write_png, calls = predict.write_png, []

    def full_disk_at_the_third(path: Path, picture: np.ndarray) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device", str(path))
        write_png(path, picture)

    monkeypatch.setattr(predict, "write_png", full_disk_at_the_third)
    with pytest.raises(OSError, match="No space left"):
        predict_to_folder(PixelMeans(), items, tmp_path / "maps", PredictOptions(2))
    folder = MapsFolder(tmp_path / "maps")
    assert not folder.scores.exists()
    written = [item for item in items if folder.overlay(item.key).is_file()]
    assert 2 <= len(written) < len(items)  # what was finished before the error stays


def test_the_first_bad_input_in_order_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "parts", 9)
    for index in (5, 2):  # two broken files; the earlier one must be the one named
        paths[index].write_bytes(paths[index].read_bytes()[:40])
    items = collect_inputs([tmp_path / "parts"])
    with pytest.raises(InputError) as error:
        predict_to_folder(PixelMeans(), items, tmp_path / "maps", PredictOptions(2))
    assert "002.png" in str(error.value) and "005.png" not in str(error.value)
    assert not any(p.is_file() for p in (tmp_path / "maps").rglob("*"))  # run.json neither
