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
from l2bt.decisions.calibrate import Calibration, CalibrationSettings, calibrate
from l2bt.decisions.calibration_images import CalibrationSplit, parse_calibration, split_calibration
from l2bt.decisions.decide import stored_mask_rules
from l2bt.decisions.thresholds import Thresholds
from l2bt.maps.evaluate import evaluate_maps
from l2bt.maps.inputs import PredictItem
from l2bt.maps.predict import PredictOptions, PredictSummary, predict_to_folder
from l2bt.methods import ExternalMaps, Method, MethodSettings, make_method
from l2bt.methods.l2bt_method import RUN_FOLDER
from l2bt.run import CONFIG_FILE, read_run, write_run
from l2bt.utils.atomic import write_text_atomic
from l2bt.utils.device import device_name, resolve_device

THRESHOLDS_FILE = "thresholds.json"
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
    decisions: CalibrationSettings = field(default_factory=CalibrationSettings)  # SPEC §7
    low_res_protocol: int | None = None  # --low-res-protocol N

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


def run_job(config: BenchmarkConfig, job: Job, out: Path) -> dict[str, Any]:
    """The results JSON of one job (SPEC §6 metrics, decisions, "run", "pro_curves")."""
    split = load_category(config.data, job.category, config.dataset)
    method = make_method(job.spec, config.settings)
    maps_root = out / "maps" / job.name
    if isinstance(method, ExternalMaps):
        evaluation = evaluate_maps(split, method.maps_dir, low_res_protocol=config.low_res_protocol)
        return _result(job, evaluation, {"description": method.describe()}, None)
    images = _calibration_split(config, split)
    work_dir = out / "models" / job.name / job.category
    tic = time.perf_counter()
    with PeakMemory() as fit_memory:
        method.fit(list(images.train), work_dir)
    train_seconds = time.perf_counter() - tic
    calibration = _thresholds(method, config, job, images, work_dir) if images.calibration else None
    thresholds = None if calibration is None else calibration.thresholds
    if thresholds is not None:
        _thresholds_into_run(work_dir / RUN_FOLDER, thresholds)
    with PeakMemory() as predict_memory:
        summary = _predict(method, config, split, maps_root / job.category, thresholds)
    evaluation = evaluate_maps(
        split,
        maps_root,
        low_res_protocol=getattr(method, "protocol_size", None) or config.low_res_protocol,
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


def _predict(
    method: Method,
    config: BenchmarkConfig,
    split: CategorySplit,
    maps_dir: Path,
    thresholds: Thresholds | None,
) -> PredictSummary:
    """Every test image's map, mask and score into `maps_dir`, decided at `thresholds`."""
    items = [PredictItem(s.image, s.key) for s in split.test]
    options = PredictOptions(config.settings.batch_size, overlays=False)
    record = method.record.with_thresholds(thresholds)
    return predict_to_folder(method, items, maps_dir, options, record, source=method.name)


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
    method: Method, config: BenchmarkConfig, job: Job, images: CalibrationSplit, work_dir: Path
) -> Calibration:
    """The method's calibration, reused from `work_dir` when it was made for the same
    method, settings, training and calibration images and rate (the model is a seeded
    function of those), so a resumed job does not predict the calibration images again."""
    decisions = config.decisions
    key = content_digest(
        {
            "method": job.spec,
            "settings": _result_settings(config.settings),
            "alpha": decisions.false_alarm_rate,
            "beta": decisions.pixel_false_alarm_rate,
            "cleanup": decisions.cleanup.to_dict(),
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
    calibration = calibrate(method, list(images.calibration), decisions, config.settings.batch_size)
    stored = {
        "key": key,
        "thresholds": calibration.thresholds.to_dict(),
        "image_scores": list(calibration.image_scores),
        "map_maxima": list(calibration.map_maxima),
    }
    write_text_atomic(path, json.dumps(stored, indent=1) + "\n")
    return calibration


def _thresholds_into_run(run_dir: Path, thresholds: Thresholds) -> None:
    """Write the thresholds into an L2BT run folder's record (as `L2BT.save_thresholds`
    does), so `l2bt predict --model models/<method>/<category>/run` decides as the
    benchmark did; other methods have no run folder."""
    if (run_dir / CONFIG_FILE).is_file():
        write_run(run_dir, read_run(run_dir).with_thresholds(thresholds))


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
        thresholds.pop("image_scores")  # in "score_distribution"
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
