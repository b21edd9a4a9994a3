"""One benchmark job: fit → calibrate → predict → evaluate one (method, category).

`run_job` is the one function both executors call: the local runner in this process,
the Ray executor (`benchmark/ray.py`) in a task on any node. It writes what is large —
the method's model under `models/<method>/<category>/` and the maps, masks, scores
and three overlays (highest, median and lowest score; `benchmark/overlays.py`) under
`maps/<method>/<category>/` — and returns the result, which the driver
writes as `results/<method>/<category>.json`. Every file is written atomically, so a
job that dies leaves nothing half-written and a re-run redoes it from its last finished
artefact (the fitted model, the thresholds).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from l2bt.benchmark.memory import PeakMemory
from l2bt.benchmark.overlays import write_overlays
from l2bt.config import content_digest
from l2bt.data import load_category
from l2bt.data.sample import CategorySplit
from l2bt.decisions.calibrate import Calibration, calibrate
from l2bt.decisions.calibration_images import CalibrationSplit, parse_calibration, split_calibration
from l2bt.decisions.cleanup import Cleanup
from l2bt.decisions.decide import stored_mask_rules
from l2bt.decisions.thresholds import Thresholds
from l2bt.maps.evaluate import evaluate_maps
from l2bt.maps.predict import PredictItem, predict_to_folder
from l2bt.methods import ExternalMaps, MethodSettings, make_method
from l2bt.utils.atomic import write_text_atomic
from l2bt.utils.device import device_name, resolve_device

THRESHOLDS_FILE = "thresholds.json"
RUN_FOLDER = "run"  # an L2BT method's run folder under its work folder: `predict --model`
# Settings that change where or how fast a job runs, not its results.
RESULT_NEUTRAL_SETTINGS = ("device", "cache_dir", "batch_size")


@dataclass(frozen=True)
class BenchmarkConfig:
    """Everything that decides a benchmark's results (recorded in benchmark.json)."""

    data: str
    dataset: str
    categories: tuple[str, ...]
    methods: tuple[str, ...]
    settings: MethodSettings
    calibration: str | None = None  # --calibration FRACTION|DIR|0; None: the default
    false_alarm_rate: float = 0.01
    low_res_protocol: int | None = None  # --low-res-protocol N
    pixel_false_alarm_rate: float | None = None  # --pixel-false-alarm-rate BETA
    cleanup: Cleanup = field(default_factory=Cleanup)  # of every mask (SPEC §7)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Job:
    """One (method, category): `spec` as written in --methods, `name` its results' name."""

    spec: str
    name: str
    category: str

    def label(self) -> str:
        return f"{self.category} / {self.name}"


def results_path(out: Path, method: str, category: str) -> Path:
    return out / "results" / method / f"{category}.json"


def run_job(config: BenchmarkConfig, job: Job, out: Path, progress: bool = False) -> dict[str, Any]:
    """The results JSON of one job (SPEC §6 metrics, decisions, "run", "pro_curves")."""
    split = load_category(config.data, job.category, config.dataset)
    method = make_method(job.spec, config.settings)
    maps_root = out / "maps" / job.name
    if isinstance(method, ExternalMaps):
        evaluation = evaluate_maps(
            split, method.maps_dir, progress, low_res_protocol=config.low_res_protocol
        )
        return _result(job, evaluation, {"description": method.describe()}, None)
    images = _calibration_split(config, split)
    work_dir = out / "models" / job.name / job.category
    tic = time.perf_counter()
    with PeakMemory() as fit_memory:
        method.fit(list(images.train), work_dir, progress)
    train_seconds = time.perf_counter() - tic
    calibration = (
        _thresholds(method, config, job, images, work_dir, progress) if images.calibration else None
    )
    if calibration is not None:
        _thresholds_into_run(work_dir / RUN_FOLDER, calibration.thresholds)
    thresholds = None if calibration is None else calibration.thresholds
    items = [PredictItem(s.image, s.key) for s in split.test]
    with PeakMemory() as predict_memory:
        summary = predict_to_folder(
            method,
            items,
            maps_root / job.category,
            config.settings.batch_size,
            overlays=False,
            progress=progress,
            thresholds=thresholds,
        )
    evaluation = evaluate_maps(
        split,
        maps_root,
        progress,
        low_res_protocol=config.low_res_protocol,
        mask_rules=None if thresholds is None else stored_mask_rules(thresholds),
    )
    write_overlays(maps_root / job.category, {s.key: s.image for s in split.test}, thresholds)
    run: dict[str, Any] = {
        "description": method.describe(),
        "device": device_name(resolve_device(config.settings.device)),
        "n_train": len(images.train),
        "calibration": {"source": images.source, "n_calibration": len(images.calibration)},
        "train_seconds": round(train_seconds, 3),
        "inference_seconds_per_image_median": round(summary.median_seconds, 4),
        "peak_rss_mib": round(max(fit_memory.peak_mib, predict_memory.peak_mib), 1),
    }
    result = _result(job, evaluation, run, calibration)
    result["score_distribution"] = _score_distribution(split, summary.scores, calibration)
    return result


def _score_distribution(
    split: CategorySplit, scores: dict[str, float], calibration: Calibration | None
) -> dict[str, list[float]]:
    """Image scores of the calibration images and of the labelled test images, by label
    (for the plot of score distributions against the threshold)."""
    labelled = [s for s in split.test if s.has_ground_truth]
    return {
        "calibration": []
        if calibration is None
        else [round(v, 8) for v in calibration.image_scores],
        "test_good": [round(scores[s.key], 8) for s in labelled if not s.is_anomalous],
        "test_defective": [round(scores[s.key], 8) for s in labelled if s.is_anomalous],
    }


def _calibration_split(config: BenchmarkConfig, split: CategorySplit) -> CalibrationSplit:
    return split_calibration(
        [s.image for s in split.train],
        parse_calibration(config.calibration),
        seed=0,
        validation=[s.image for s in split.validation],
    )


def _thresholds(
    method: Any,
    config: BenchmarkConfig,
    job: Job,
    images: CalibrationSplit,
    work_dir: Path,
    progress: bool,
) -> Calibration:
    """The method's calibration, reused from `work_dir` when it was made for the same
    method, settings, training and calibration images and rate (the model is a seeded
    function of those), so a resumed job does not predict the calibration images again."""
    alpha, batch_size = config.false_alarm_rate, config.settings.batch_size
    key = content_digest(
        {
            "method": job.spec,
            "settings": _result_settings(config.settings),
            "alpha": alpha,
            "beta": config.pixel_false_alarm_rate,
            "cleanup": config.cleanup.to_dict(),
            "train": [str(p) for p in images.train],
            "calibration": [str(p) for p in images.calibration],
        }
    )
    path = work_dir / THRESHOLDS_FILE
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            return Calibration(
                Thresholds.from_dict(stored["thresholds"]),
                tuple(stored["image_scores"]),
                tuple(stored["map_maxima"]),
            )
    calibration = calibrate(
        method,
        list(images.calibration),
        alpha,
        batch_size,
        progress,
        beta=config.pixel_false_alarm_rate,
        cleanup=config.cleanup,
    )
    stored = {
        "key": key,
        "thresholds": calibration.thresholds.to_dict(),
        "image_scores": list(calibration.image_scores),
        "map_maxima": list(calibration.map_maxima),
    }
    write_text_atomic(path, json.dumps(stored, indent=1) + "\n")
    return calibration


def _thresholds_into_run(run_dir: Path, thresholds: Thresholds) -> None:
    """Write the thresholds into an L2BT run folder's config.json (as `L2BT.save_thresholds`
    does), so `l2bt predict --model models/<method>/<category>/run` decides as the
    benchmark did; other methods have no run folder."""
    path = run_dir / "config.json"
    if not path.is_file():
        return
    described = json.loads(path.read_text())
    described["thresholds"] = thresholds.to_dict()
    write_text_atomic(path, json.dumps(described, indent=2))


def _result_settings(settings: MethodSettings) -> dict[str, Any]:
    return {k: v for k, v in asdict(settings).items() if k not in RESULT_NEUTRAL_SETTINGS}


def _result(
    job: Job, evaluation: Any, run: dict[str, Any], calibration: Calibration | None
) -> dict[str, Any]:
    result = evaluation.to_json_dict()
    result["method"] = job.name
    if calibration is not None:
        thresholds = calibration.thresholds.to_dict()
        thresholds.pop("calibration_images")  # listed in the model folder's thresholds.json
        result["thresholds"] = thresholds
    result["run"] = run
    result["pro_curves"] = _curves(evaluation.pro_curves)
    return result


def _curves(curves: dict[str, Any]) -> dict[str, Any]:
    if not curves:
        return {}
    first = next(iter(curves.values()))
    return {
        "fpr": [round(float(v), 6) for v in first.fpr],
        **{name: [round(float(v), 6) for v in c.pro] for name, c in curves.items()},
    }
