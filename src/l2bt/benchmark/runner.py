"""The benchmark: for every category and method, fit → predict → evaluate, resumably.

Layout of the output folder (self-describing):

    benchmark.json                          the settings of the run
    models/<method>/<category>/             what each method learned (reused on resume)
    maps/<method>/<category>/<key>.tiff     maps in the SPEC §5 layout, + scores.csv
    results/<method>/<category>.json        SPEC §6 metrics + "run" (times, memory, device)
                                            + "pro_curves" (for plots)
    results.csv, results.md, plots/*.png    the summary, rewritten after every result

A (method, category) whose results JSON exists is not redone, and every file is written
atomically, so a killed run keeps everything it finished and a re-run continues.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from l2bt import __version__
from l2bt.atomic import write_text_atomic
from l2bt.benchmark.memory import PeakMemory
from l2bt.data import load_category
from l2bt.data.sample import CategorySplit
from l2bt.device import device_name, resolve_device
from l2bt.errors import InputError
from l2bt.evaluation import evaluate_maps
from l2bt.inference import PredictItem, predict_to_folder
from l2bt.methods import ExternalMaps, MethodSettings, make_method
from l2bt.report.plots import plot_smallest_defects
from l2bt.report.summary import write_summary
from l2bt.teacher import load_teacher


@dataclass(frozen=True)
class BenchmarkConfig:
    data: str
    dataset: str
    categories: tuple[str, ...]
    methods: tuple[str, ...]
    settings: MethodSettings


def results_path(out: Path, method: str, category: str) -> Path:
    return out / "results" / method / f"{category}.json"


def run_benchmark(config: BenchmarkConfig, out: Path, progress: bool = True,
                  log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run every (category, method) not done yet; returns every result present."""
    methods = [make_method(spec, config.settings) for spec in config.methods]
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise InputError(f"a method is named twice in --methods: {', '.join(names)}")
    splits = [load_category(config.data, c, config.dataset) for c in config.categories]
    if not all(isinstance(m, ExternalMaps) for m in methods):
        check_teacher(config.settings)  # before any output: offline without weights stops here
    out.mkdir(parents=True, exist_ok=True)
    _write_description(config, out)
    for split in splits:
        for method in methods:
            target = results_path(out, method.name, split.name)
            if target.is_file():
                log(f"[{split.name} / {method.name}] done earlier, kept")
                continue
            log(f"[{split.name} / {method.name}] running")
            result = _run_one(method, split, out, config.settings, progress)
            write_text_atomic(target, json.dumps(result, indent=1) + "\n")
            write_summary(out, names, [s.name for s in splits])
            log(f"[{split.name} / {method.name}] AUPRO@30% all {_short(result, 'all')}, "
                f"q1 {_short(result, 'q1')}")
        plot_smallest_defects(out, split, names)
    write_summary(out, names, [s.name for s in splits])
    return [json.loads(results_path(out, m, s.name).read_text())
            for s in splits for m in names]


def check_teacher(settings: MethodSettings) -> None:
    """Load the teacher once, so missing or wrong weights fail before anything is written."""
    load_teacher(settings.teacher, settings.weights)


def _short(result: dict[str, Any], size_bin: str) -> str:
    value = result["aupro"]["0.3"][size_bin]
    return "—" if value is None else f"{value:.3f}"


def _write_description(config: BenchmarkConfig, out: Path) -> None:
    description = {"l2bt_version": __version__, "torch": torch.__version__, **asdict(config),
                   "device": device_name(resolve_device(config.settings.device))}
    write_text_atomic(out / "benchmark.json", json.dumps(description, indent=2) + "\n")


def _run_one(method, split: CategorySplit, out: Path, settings: MethodSettings,
             progress: bool) -> dict[str, Any]:
    if isinstance(method, ExternalMaps):
        evaluation = evaluate_maps(split, method.maps_dir, progress)
        run: dict[str, Any] = {"description": method.describe()}
    else:
        work_dir = out / "models" / method.name / split.name
        tic = time.perf_counter()
        with PeakMemory() as fit_memory:
            method.fit([s.image for s in split.train], work_dir, progress)
        train_seconds = time.perf_counter() - tic
        maps_root = out / "maps" / method.name
        items = [PredictItem(s.image, s.key) for s in split.test]
        with PeakMemory() as predict_memory:
            summary = predict_to_folder(method, items, maps_root / split.name,
                                        settings.batch_size, overlays=False, progress=progress)
        evaluation = evaluate_maps(split, maps_root, progress)
        run = {
            "description": method.describe(),
            "device": device_name(resolve_device(settings.device)),
            "n_train": len(split.train),
            "train_seconds": round(train_seconds, 3),
            "inference_seconds_per_image_median": round(summary.median_seconds, 4),
            "peak_rss_mib": round(max(fit_memory.peak_mib, predict_memory.peak_mib), 1),
        }
        if torch.cuda.is_available() and resolve_device(settings.device).type == "cuda":
            run["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    result = evaluation.to_json_dict()
    result["method"] = method.name
    result["run"] = run
    result["pro_curves"] = _curves(evaluation.pro_curves)
    return result


def _curves(curves) -> dict[str, Any]:
    if not curves:
        return {}
    first = next(iter(curves.values()))
    return {"fpr": [round(float(v), 6) for v in first.fpr],
            **{name: [round(float(v), 6) for v in c.pro] for name, c in curves.items()}}


def parse_categories(text: str | None, available: Sequence[str]) -> tuple[str, ...]:
    """`A,B` or None for every category found under the data root."""
    if not text:
        if not available:
            raise InputError("no categories found under --data")
        return tuple(available)
    return tuple(c.strip() for c in text.split(",") if c.strip())
