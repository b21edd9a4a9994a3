"""Segmentation thresholds on real and synthetic data, in one run, on the same maps.

For each data set (magnetic_tile from ../shared, and a set written by `l2bt make-synthetic`):
L2BT is fitted once (random ViT-S/14 teacher at `--image-size`, `--epochs` epochs) with
calibration images held out; the calibration and test maps are predicted once. Then, on
those same maps, every mask rule: the max-based pixel threshold at α, and the segmentation
threshold by conformal risk control at each β of `--betas`, without and with clean-up
(`--cleanup`). For each: the threshold, the rate that holds (β or 1/(n+1)), SegF1 on the
test set, and the observed mean fraction of the test's good images' pixels flagged, with a
95 % interval (mean ± 1.96 standard errors over the good images), beside the oracle pixel
F1-max (test labels). A random teacher gives meaningless SegF1; the guarantee does not
depend on the teacher.

    .venv/bin/python benchmarks/bench_segmentation.py
    .venv/bin/python benchmarks/bench_segmentation.py --quick   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from l2bt import L2BT
from l2bt.config import L2BTConfig, TeacherConfig, TrainConfig
from l2bt.data import load_category
from l2bt.data.image_io import read_image
from l2bt.data.sample import CategorySplit
from l2bt.data.synthetic import SyntheticConfig, write_synthetic
from l2bt.decisions.calibrate import CalibrationSettings, calibrate
from l2bt.decisions.calibration_images import CalibrationChoice, split_calibration
from l2bt.decisions.cleanup import Cleanup
from l2bt.decisions.risk import flagged_fraction, segmentation_threshold
from l2bt.maps.evaluate import evaluate_maps
from l2bt.maps.inputs import PredictItem
from l2bt.maps.layout import MapsFolder, read_map
from l2bt.maps.predict import PredictOptions, predict_to_folder

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def fit_and_predict(
    split: CategorySplit, args: argparse.Namespace, work: Path, fraction: float
) -> tuple:
    """The fitted model, its calibration images' maps (saved as .npy) and the test maps."""
    images = split_calibration(
        [s.image for s in split.train], CalibrationChoice(fraction=fraction), seed=0
    )
    config = L2BTConfig(
        TeacherConfig("dinov2_vits14", "random", args.image_size),
        TrainConfig(epochs=args.epochs),
    )
    tic = time.perf_counter()
    model = L2BT.fit(images.train, config, device="cpu", cache_dir=work / "cache")
    calibration = calibrate(model, list(images.calibration), CalibrationSettings(args.alpha))
    maps_dir = work / "calibration"
    maps_dir.mkdir()
    for i, path in enumerate(images.calibration):
        np.save(maps_dir / f"{i}.npy", model.predict(read_image(path)).anomaly_map)
    items = [PredictItem(s.image, s.key) for s in split.evaluable_test]
    predict_to_folder(model, items, work / "maps" / split.name, PredictOptions(overlays=False))
    seconds = time.perf_counter() - tic
    calibration_maps = sorted(maps_dir.glob("*.npy"), key=lambda p: int(p.stem))
    return calibration.thresholds, calibration_maps, work / "maps", seconds


def good_fractions(split: CategorySplit, maps: Path, threshold: float, cleanup: Cleanup) -> list:
    folder = MapsFolder(maps / split.name)
    return [
        flagged_fraction(read_map(folder.map(s.key)), threshold, cleanup)
        for s in split.evaluable_test
        if not s.is_anomalous
    ]


def interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and a normal 95 % interval over the images."""
    mean = float(np.mean(values))
    se = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
    return mean, max(0.0, mean - 1.96 * se), mean + 1.96 * se


def bench_dataset(
    split: CategorySplit, args: argparse.Namespace, work: Path, fraction: float
) -> dict:
    thresholds, calibration_maps, maps, seconds = fit_and_predict(split, args, work, fraction)

    def calibration_stream() -> Iterator[np.ndarray]:
        for path in calibration_maps:
            yield np.load(path, mmap_mode="r")

    cleanup = Cleanup(*args.cleanup)
    rules: dict[str, tuple[float, Cleanup, dict]] = {
        "pixel (max-based, α)": (thresholds.pixel, Cleanup(), {"rate": thresholds.guaranteed_rate})
    }
    for beta in args.betas:
        for name, chosen in (("", Cleanup()), ("+cleanup", cleanup)):
            tic = time.perf_counter()
            found = segmentation_threshold(calibration_stream, beta, chosen)
            rules[f"β={beta:g}{name}"] = (
                found.threshold,
                chosen,
                {"rate": found.attainable_rate, "seconds": round(time.perf_counter() - tic, 2)},
            )
    mask_rules = {
        name: (lambda m, t=t, c=c: c.apply(np.asarray(m) > np.float32(t)))
        for name, (t, c, _) in rules.items()
    }
    evaluation = evaluate_maps(split, maps, mask_rules=mask_rules)
    rows = {}
    for name, (threshold, chosen, extra) in rules.items():
        mean, low, high = interval(good_fractions(split, maps, threshold, chosen))
        rows[name] = {
            "threshold": threshold,
            "seg_f1": evaluation.seg_f1_at[name],
            "good_flagged_mean": mean,
            "good_flagged_95": [low, high],
            **extra,
        }
    return {
        "n_calibration": len(calibration_maps),
        "fit_and_predict_seconds": round(seconds, 1),
        "oracle_pixel_f1_max": evaluation.oracle.pixel_f1_max,
        "rules": rows,
    }


def print_table(name: str, result: dict) -> None:
    print(
        f"\n{name}: {result['n_calibration']} calibration images; oracle pixel F1-max "
        f"{result['oracle_pixel_f1_max']:.4f} (test labels)"
    )
    print(f"{'rule':<22} {'threshold':>10} {'rate':>8} {'SegF1':>7}  good pixels flagged (95 %)")
    for rule, row in result["rules"].items():
        low, high = row["good_flagged_95"]
        print(
            f"{rule:<22} {row['threshold']:10.5g} {row['rate']:8.3g} {row['seg_f1']:7.4f}  "
            f"{row['good_flagged_mean']:.2e} [{low:.2e}, {high:.2e}]"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--category", default="magnetic_tile")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--calibration", type=float, default=0.1)
    parser.add_argument(
        "--betas", type=float, nargs="+", default=[1e-3, 1e-4, 1e-2, 2e-2, 5e-2, 1e-1]
    )
    parser.add_argument("--synthetic-train", type=int, default=80)
    parser.add_argument(
        "--synthetic-calibration", type=float, default=0.5, help="share of its train/good"
    )
    parser.add_argument(
        "--cleanup", type=int, nargs=3, default=[16, 2, 1], metavar=("AREA", "RADIUS", "FILL")
    )
    parser.add_argument("--synthetic-size", type=int, default=1024)
    parser.add_argument("--quick", action="store_true", help="the mini set, 1 epoch, 112 px")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.cleanup = (args.cleanup[0], args.cleanup[1], bool(args.cleanup[2]))
    if args.quick:
        args.category, args.epochs, args.image_size, args.synthetic_size = (
            "magnetic_tile_mini",
            1,
            112,
            256,
        )
        args.calibration, args.synthetic_train = 0.25, 20
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        real = load_category(args.data, args.category)
        (work / "real").mkdir()
        results[args.category] = bench_dataset(real, args, work / "real", args.calibration)
        synthetic = SyntheticConfig(
            size=args.synthetic_size, n_train=args.synthetic_train, n_test_good=10
        )
        root = write_synthetic(work / "synthetic-data", synthetic)
        (work / "synthetic").mkdir()
        split = load_category(root.parent, synthetic.category)
        results["synthetic"] = bench_dataset(
            split, args, work / "synthetic", args.synthetic_calibration
        )
    for name, result in results.items():
        print_table(name, result)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
