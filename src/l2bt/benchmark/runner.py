"""The benchmark: for every category and method, fit → calibrate → predict → evaluate,
resumably, here or on a Ray cluster.

Layout of the output folder (self-describing; identical whichever executor ran it):

    benchmark.json                          the settings of the run
    models/<method>/<category>/             what each method learned, its thresholds.json
    maps/<method>/<category>/<key>.tiff     maps in the SPEC §5 layout, + scores.csv, and
                                            with thresholds <key>_mask.png, regions.csv;
                                            <key>_overlay.png of the highest-, median-
                                            and lowest-scoring images, overlays.json
    results/<method>/<category>.json        SPEC §6–7 metrics + "run" (times, memory,
                                            device, calibration) + "pro_curves" (plots)
    results.csv, results.md, plots/*.png    the summary, rewritten after every result

A (method, category) whose results JSON exists is not redone. Jobs (`jobs.run_job`) run
here one after another, or as Ray tasks (`benchmark/ray.py`); either way this driver
writes each result as its job finishes, atomically, then the summary, so a run killed at
any moment (even SIGKILL) keeps all it finished and a re-run continues. A failed job is
one line naming it; the others go on, and the run ends with a non-zero status.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from l2bt import __version__
from l2bt.benchmark.jobs import (
    RESULT_NEUTRAL_SETTINGS,
    BenchmarkConfig,
    Job,
    results_path,
    run_job,
)
from l2bt.data import load_category
from l2bt.data.sample import CategorySplit
from l2bt.errors import InputError
from l2bt.methods import MethodSettings, make_method
from l2bt.report.plots import plot_smallest_defects
from l2bt.report.summary import write_summary
from l2bt.teacher import load_teacher
from l2bt.utils.atomic import remove_leftovers, write_text_atomic
from l2bt.utils.device import device_name, resolve_device

# What may change between a run and its resumption: more or fewer methods and
# categories, and settings that do not change results.
RESUMABLE_CHANGES = ("methods", "categories", *RESULT_NEUTRAL_SETTINGS)


@dataclass(frozen=True)
class JobFailure:
    job: Job
    error: str  # "ErrorType: message", one line

    def line(self) -> str:
        return f"[{self.job.label()}] failed: {self.error}"


@dataclass
class BenchmarkRun:
    """The plan of a run and what has come of it so far."""

    config: BenchmarkConfig
    out: Path
    splits: list[CategorySplit]
    names: list[str]  # method names, in --methods order
    jobs: list[Job]  # every (category, method), in order
    teacher_weights_id: str | None  # "random", a checkpoint's hash; None: no teacher used
    failures: list[JobFailure] = field(default_factory=list)

    @property
    def categories(self) -> list[str]:
        return [s.name for s in self.splits]

    def pending(self) -> list[Job]:
        return [j for j in self.jobs if not results_path(self.out, j.name, j.category).is_file()]

    def results(self) -> list[dict[str, Any]]:
        return [
            json.loads(path.read_text())
            for j in self.jobs
            if (path := results_path(self.out, j.name, j.category)).is_file()
        ]


Executor = Callable[[BenchmarkRun, Sequence[Job], Callable[[str], None]], None]


def plan_benchmark(config: BenchmarkConfig, out: Path) -> BenchmarkRun:
    """Check every input and the output folder, before any work or output."""
    methods = [make_method(spec, config.settings) for spec in config.methods]
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise InputError(f"a method is named twice in --methods: {', '.join(names)}")
    splits = [load_category(config.data, c, config.dataset) for c in config.categories]
    weights_id = None
    if any(getattr(m, "uses_teacher", True) for m in methods):
        weights_id = check_teacher(config.settings)  # offline without weights stops here
    check_resumable(config, out)
    jobs = [
        Job(spec, method.name, split.name)
        for split in splits
        for spec, method in zip(config.methods, methods, strict=True)
    ]
    return BenchmarkRun(config, out, splits, names, jobs, weights_id)


def run_benchmark(
    config: BenchmarkConfig,
    out: Path,
    log: Callable[[str], None] = print,
    executor: Executor | None = None,
) -> BenchmarkRun:
    """Run every job not done yet (in this process, or with `executor`, e.g. Ray's)."""
    run = plan_benchmark(config, out)
    out.mkdir(parents=True, exist_ok=True)
    if removed := remove_leftovers(out):
        log(f"removed {removed} temporary file(s) left by an earlier run that was killed")
    _write_description(config, out, run.teacher_weights_id)
    done = [j for j in run.jobs if j not in run.pending()]
    for job in done:
        log(f"[{job.label()}] done earlier, kept")
    (executor or run_locally)(run, run.pending(), log)
    write_summary(out, run.names, run.categories)
    return run


def run_locally(run: BenchmarkRun, jobs: Sequence[Job], log: Callable[[str], None]) -> None:
    """One job after another in this process; Ctrl-C stops after what finished."""
    for job in jobs:
        log(f"[{job.label()}] running")
        try:
            result = run_job(run.config, job, run.out)
        except Exception as e:  # reported, and the other jobs go on
            record_failure(run, job, e, log)
        else:
            record_result(run, job, result, log)


def record_result(
    run: BenchmarkRun, job: Job, result: dict[str, Any], log: Callable[[str], None]
) -> None:
    """Write a finished job's results JSON, the summary, and a category's close-up plot
    once all its methods are done."""
    write_text_atomic(
        results_path(run.out, job.name, job.category), json.dumps(result, indent=1) + "\n"
    )
    write_summary(run.out, run.names, run.categories)
    log(f"[{job.label()}] AUPRO@30% all {_short(result, 'all')}, q1 {_short(result, 'q1')}")
    split = next(s for s in run.splits if s.name == job.category)
    if all(results_path(run.out, name, split.name).is_file() for name in run.names):
        plot_smallest_defects(run.out, split, run.names)


def record_failure(
    run: BenchmarkRun, job: Job, error: BaseException, log: Callable[[str], None]
) -> None:
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    failure = JobFailure(job, f"{type(error).__name__}: {message}")
    run.failures.append(failure)
    log(failure.line())


def check_teacher(settings: MethodSettings) -> str:
    """Load the teacher once, so missing or wrong weights fail before anything is written;
    the identity of its weights ("random" or the checkpoint's hash)."""
    return load_teacher(settings.teacher.variant, settings.teacher.weights).weights_id


def check_resumable(config: BenchmarkConfig, out: Path) -> None:
    """An output folder holding a benchmark with other settings is not continued."""
    path = out / "benchmark.json"
    if not path.is_file():
        return
    try:
        earlier = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"unreadable benchmark description ({e})", path) from e
    now = _comparable(config.to_dict())
    before = _comparable({k: earlier.get(k) for k in config.to_dict()})
    changed = sorted(k for k in now if now[k] != before.get(k))
    if changed:
        raise InputError(
            f"this folder holds a benchmark run with other settings "
            f"({', '.join(changed)}); use another --out",
            path,
        )


def _comparable(described: dict[str, Any]) -> dict[str, Any]:
    """The settings that must match, flat (`settings.teacher`), as JSON holds them."""
    described = json.loads(json.dumps(described))  # tuples as lists, as benchmark.json has them
    flat = {k: v for k, v in described.items() if k != "settings"}
    flat |= {f"settings.{k}": v for k, v in (described.get("settings") or {}).items()}
    return {k: v for k, v in flat.items() if k.split(".")[-1] not in RESUMABLE_CHANGES}


def _short(result: dict[str, Any], size_bin: str) -> str:
    value = result["aupro"]["0.3"][size_bin]
    return "—" if value is None else f"{value:.3f}"


def _write_description(config: BenchmarkConfig, out: Path, weights_id: str | None) -> None:
    description = {
        "l2bt_version": __version__,
        "torch": torch.__version__,
        **config.to_dict(),
        "teacher_weights_id": weights_id,
        "device": device_name(resolve_device(config.settings.device)),
    }
    write_text_atomic(out / "benchmark.json", json.dumps(description, indent=2) + "\n")


def parse_categories(text: str | None, available: Sequence[str]) -> tuple[str, ...]:
    """`A,B` or None for every category found under the data root."""
    if not text:
        if not available:
            raise InputError("no categories found under --data")
        return tuple(available)
    return tuple(c.strip() for c in text.split(",") if c.strip())
