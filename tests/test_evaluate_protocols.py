"""`l2bt evaluate` beyond SPEC §6's core: the low-resolution protocol, decisions, partial
and full reads agreeing, the reader and counting threads, start-up without torch."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from helpers import SHARED_DATA, write_mvtec_tree
from l2bt.cli import main
from l2bt.data import load_category
from l2bt.errors import InputError
from l2bt.maps.evaluate import evaluate_maps
from l2bt.metrics import evaluate_arrays

SRC = Path(__file__).resolve().parents[1] / "src"


def write_maps(data, maps, category="toy", noise=0.5, seed=0, compression=None, dataset=None):
    """Maps that light up the ground truth plus noise, in the SPEC §5 layout; returns the
    split and the maps and masks as arrays, in test order."""
    rng = np.random.default_rng(seed)
    split = (
        load_category(data, category) if dataset is None else load_category(data, category, dataset)
    )
    arrays, masks = [], []
    for s in split.evaluable_test:
        w, h = Image.open(s.image).size
        mask = np.zeros((h, w), bool) if s.mask is None else np.asarray(Image.open(s.mask)) > 127
        anomaly_map = (mask + noise * rng.random((h, w))).astype(np.float32)
        anomaly_map = np.round(anomaly_map * 20) / 20  # ties between the two kinds of pixel
        path = maps / category / f"{s.key}.tiff"
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, anomaly_map, compression=compression)
        arrays.append(anomaly_map)
        masks.append(mask)
    return split, arrays, masks


def keys(split):
    return [s.key for s in split.evaluable_test]


def by_hand_bilinear(image, size):
    """Bilinear to size × size, pixel by pixel: source (i + ½)·n/N − ½, clamped at 0."""

    def taps(n_in, i):
        x = max((i + 0.5) * (n_in / size) - 0.5, 0.0)
        x0 = min(int(np.floor(x)), n_in - 1)
        return x0, min(x0 + 1, n_in - 1), x - x0

    h, w = image.shape
    rows = np.empty((size, w))
    for i in range(size):
        r0, r1, wr = taps(h, i)
        rows[i] = (1.0 - wr) * image[r0].astype(float) + wr * image[r1].astype(float)
    out = np.empty((size, size))
    for j in range(size):
        c0, c1, wc = taps(w, j)
        out[:, j] = (1.0 - wc) * rows[:, c0] + wc * rows[:, c1]
    return out


def by_hand_nearest(mask, size):
    h, w = mask.shape
    return np.array(
        [
            [
                mask[
                    min((2 * i + 1) * h // (2 * size), h - 1),
                    min((2 * j + 1) * w // (2 * size), w - 1),
                ]
                for j in range(size)
            ]
            for i in range(size)
        ]
    )


@pytest.mark.parametrize("size", [16, 33])
def test_low_res_protocol_equals_resizing_by_hand(tmp_path, size):
    write_mvtec_tree(tmp_path / "data")
    split, maps, masks = write_maps(tmp_path / "data", tmp_path / "maps")
    got = evaluate_maps(split, tmp_path / "maps", low_res_protocol=size)
    small = evaluate_arrays(
        [by_hand_bilinear(m, size) for m in maps], [by_hand_nearest(k, size) for k in masks]
    )
    assert got.low_res is not None and got.low_res.size == size
    assert got.low_res.p_auroc == small.p_auroc
    assert got.low_res.aupro == small.aupro
    assert got.aupro == evaluate_arrays(maps, masks).aupro  # full resolution untouched
    data = got.to_json_dict()["low_res_protocol"]
    assert set(data) == {"size", "p_auroc", "aupro"} and data["size"] == size


def test_compressed_maps_read_in_full_agree_with_mapped_ones(tmp_path):
    write_mvtec_tree(tmp_path / "data")
    split, maps, masks = write_maps(tmp_path / "data", tmp_path / "plain")
    write_maps(tmp_path / "data", tmp_path / "zlib", compression="zlib")
    with pytest.raises(ValueError):
        tifffile.memmap(next((tmp_path / "zlib").rglob("*.tiff")), mode="r")  # not mappable
    mapped = evaluate_maps(split, tmp_path / "plain", low_res_protocol=8)
    decoded = evaluate_maps(split, tmp_path / "zlib", low_res_protocol=8)
    assert mapped.to_json_dict() == decoded.to_json_dict()
    direct = evaluate_arrays(maps, masks, category="toy", keys=keys(split)).to_json_dict()
    assert mapped.to_json_dict() == {
        **direct,
        "low_res_protocol": decoded.to_json_dict()["low_res_protocol"],
    }


@pytest.mark.needs_data
def test_real_images_one_or_several_threads_give_identical_results(tmp_path, monkeypatch):
    from l2bt.metrics import cells

    monkeypatch.setattr(cells, "BUFFER_MIN", 5000)  # many batches, several in flight
    monkeypatch.setattr(cells, "BUFFER_MAX", 5000)
    split, maps, masks = write_maps(SHARED_DATA, tmp_path / "maps", "magnetic_tile_mini", noise=2.0)
    one = evaluate_maps(split, tmp_path / "maps", workers=1).to_json_dict()
    for workers in (2, 3):
        assert evaluate_maps(split, tmp_path / "maps", workers=workers).to_json_dict() == one
    assert (
        one
        == evaluate_arrays(
            maps, masks, category="magnetic_tile_mini", keys=keys(split)
        ).to_json_dict()
    )
    assert one["aupimo"]["mean"] is not None and len(one["aupimo"]["per_image"]) == 25


# ---- decisions -----------------------------------------------------------------------------


def write_decisions(split, maps_dir, maps, verdict=lambda s: "defective"):
    lines = ["key,score,verdict"]
    for s, m in zip(split.evaluable_test, maps, strict=True):
        Image.fromarray(((m > 0.9) * 255).astype(np.uint8)).save(
            maps_dir / split.name / f"{s.key}_mask.png"
        )
        lines.append(f"{s.key},{m.max()},{verdict(s)}")
    (maps_dir / split.name / "scores.csv").write_text("\n".join(lines) + "\n")


def test_cli_prints_and_writes_the_new_figures(tmp_path, capsys):
    write_mvtec_tree(tmp_path / "data")
    split, maps, masks = write_maps(tmp_path / "data", tmp_path / "maps")
    write_decisions(
        split, tmp_path / "maps", maps, verdict=lambda s: "defective" if s.is_anomalous else "good"
    )
    out = tmp_path / "m.json"
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(tmp_path / "data"),
                "--category",
                "toy",
                "--maps",
                str(tmp_path / "maps"),
                "--out",
                str(out),
                "--low-res-protocol",
                "16",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    for figure in ("P-AP", "AUPIMO", "F1-max", "SegF1", "by area", "16x16"):
        assert figure in printed, figure
    result = json.loads(out.read_text())
    assert {"p_ap", "aupro_abs", "aupimo", "oracle", "decisions", "low_res_protocol"} <= set(result)
    assert result["decisions"]["image"] == {
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "false_alarm_rate": 0.0,
    }
    predicted = [m > 0.9 for m in maps]
    every_p = np.concatenate([p.ravel() for p in predicted])
    every_k = np.concatenate([k.ravel() for k in masks])
    tp = np.sum(every_p & every_k)
    assert result["decisions"]["seg_f1"] == pytest.approx(
        2 * tp / (2 * tp + np.sum(every_p ^ every_k))
    )
    assert set(result["aupro_abs"]["0.3"]) == {"<=64", "<=256", "<=1024", "<=4096", "all"}
    assert set(result["aupimo"]["per_image"]) == {s.key for s in split.test if s.is_anomalous}
    assert result["oracle"]["image_f1_max"] == pytest.approx(1.0)


def test_masks_for_some_images_only_name_the_first_missing_one(tmp_path):
    write_mvtec_tree(tmp_path / "data")
    split, maps, _ = write_maps(tmp_path / "data", tmp_path / "maps")
    write_decisions(split, tmp_path / "maps", maps)
    first, second = split.evaluable_test[1], split.evaluable_test[4]
    for s in (second, first):
        (tmp_path / "maps/toy" / f"{s.key}_mask.png").unlink()
    with pytest.raises(InputError, match="predicted mask missing") as error:
        evaluate_maps(split, tmp_path / "maps")
    assert error.value.path == str(tmp_path / "maps/toy" / f"{first.key}_mask.png")


def test_a_verdict_that_is_neither_word_names_its_line(tmp_path):
    write_mvtec_tree(tmp_path / "data")
    split, maps, _ = write_maps(tmp_path / "data", tmp_path / "maps")
    write_decisions(
        split, tmp_path / "maps", maps, verdict=lambda s: "bad" if s.key.endswith("002") else "good"
    )
    with pytest.raises(InputError, match=r"line [0-9]+: verdict 'bad'") as error:
        evaluate_maps(split, tmp_path / "maps")
    assert Path(error.value.path).name == "scores.csv"


def test_a_predicted_mask_of_the_wrong_size_is_named(tmp_path):
    write_mvtec_tree(tmp_path / "data")
    split, maps, _ = write_maps(tmp_path / "data", tmp_path / "maps")
    write_decisions(split, tmp_path / "maps", maps)
    bad = tmp_path / "maps/toy" / f"{split.evaluable_test[2].key}_mask.png"
    Image.fromarray(np.zeros((7, 9), np.uint8)).save(bad)
    with pytest.raises(InputError, match="predicted mask is 7x9") as error:
        evaluate_maps(split, tmp_path / "maps")
    assert error.value.path == str(bad)


def test_without_verdicts_there_are_no_decisions(tmp_path):
    write_mvtec_tree(tmp_path / "data")
    split, maps, _ = write_maps(tmp_path / "data", tmp_path / "maps")
    write_decisions(split, tmp_path / "maps", maps)
    lines = ["key,score"] + [f"{s.key},1.0" for s in split.evaluable_test]
    (tmp_path / "maps/toy/scores.csv").write_text("\n".join(lines) + "\n")
    assert evaluate_maps(split, tmp_path / "maps").decisions is None


def test_the_first_bad_file_in_order_is_named_whatever_the_readers_meet_first(tmp_path):
    write_mvtec_tree(tmp_path / "data")
    split, _, _ = write_maps(tmp_path / "data", tmp_path / "maps")
    first, last = split.evaluable_test[0], split.evaluable_test[-1]
    assert not first.is_anomalous and last.is_anomalous  # read in pass 2, and in pass 1
    (tmp_path / "maps/toy" / f"{first.key}.tiff").unlink()
    tifffile.imwrite(tmp_path / "maps/toy" / f"{last.key}.tiff", np.zeros((3, 3), np.float32))
    with pytest.raises(InputError, match="not found") as error:
        evaluate_maps(split, tmp_path / "maps")
    assert error.value.path == str(tmp_path / "maps/toy" / f"{first.key}.tiff")


# ---- start-up ---------------------------------------------------------------------------------


def test_evaluate_never_imports_torch(tmp_path):
    write_mvtec_tree(tmp_path / "data")
    write_maps(tmp_path / "data", tmp_path / "maps")
    script = textwrap.dedent(f"""
        import sys
        import l2bt.cli
        code = l2bt.cli.main(["evaluate", "--data", {str(tmp_path / "data")!r},
                              "--category", "toy", "--maps", {str(tmp_path / "maps")!r},
                              "--low-res-protocol", "8"])
        assert code == 0, code
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "sklearn")
                       or m.startswith("scipy.stats"))
        print("IMPORTED", heavy)
    """)
    run = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "IMPORTED []" in run.stdout


def test_progress_bars_pass_every_item_through():
    from l2bt.maps.evaluate import _progress
    from l2bt.utils.progress import set_progress

    assert list(_progress(iter([1, 2, 3]), 3, "pass")) == [1, 2, 3]
    set_progress(False)
    assert list(_progress(iter([1, 2]), 2, "pass")) == [1, 2]


def test_a_non_finite_defect_pixel_is_named_by_the_partial_read_of_pass_1(tmp_path):
    write_mvtec_tree(tmp_path / "data")
    split, _, _ = write_maps(tmp_path / "data", tmp_path / "maps")
    sample = split.evaluable_test[3]  # with defects: pass 1 reads only those pixels
    broken = tifffile.imread(tmp_path / "maps/toy" / f"{sample.key}.tiff")
    broken[broken > 0.9] = np.nan  # defect pixels only
    tifffile.imwrite(tmp_path / "maps/toy" / f"{sample.key}.tiff", broken)
    with pytest.raises(InputError, match="non-finite") as error:
        evaluate_maps(split, tmp_path / "maps")
    assert error.value.path == str(tmp_path / "maps/toy" / f"{sample.key}.tiff")
