"""The benchmark's summary: results.csv and results.md, one row per (method, category)
and a mean row per method, like the paper's tables; then the plots.

results.md opens with what made the figures (teacher, weights identity, with a warning
when they are random, input size and mode, epochs, precision, calibration; from
benchmark.json) and the protocol (resolution, thresholds, what "oracle" means), then
the main table, the decisions table (at the thresholds calibrated on defect-free images,
next to the oracle F1-max that uses the test labels), SegF1 at each stored mask
threshold next to the oracle pixel F1-max (when the results have it), and, with
`--low-res-protocol N`, the two protocols side by side.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from l2bt.report.provenance import from_benchmark
from l2bt.utils.atomic import write_text_atomic

LIMITS = ("0.3", "0.1", "0.05", "0.01")
Getter = Callable[[dict[str, Any]], Any]
Results = dict[tuple[str, str], dict[str, Any]]


def _path(*keys: str) -> Getter:
    """A getter for a nested key, None where any level is missing."""

    def get(result: dict[str, Any]) -> Any:
        value: Any = result
        for key in keys:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value

    return get


def metric_columns() -> list[tuple[str, Getter]]:
    """(column name, getter on a result dict): the accuracy figures."""
    columns: list[tuple[str, Getter]] = [
        ("I-AUROC", _path("i_auroc")),
        ("P-AUROC", _path("p_auroc")),
        ("P-AP", _path("p_ap")),
    ]
    for size_bin in ("all", "q1"):
        for limit in LIMITS:
            columns.append(
                (f"AUPRO@{float(limit):.0%} {size_bin}", _path("aupro", limit, size_bin))
            )
    for limit in LIMITS:
        columns.append((f"rho@{float(limit):.0%}", _path("robustness", limit, "rho")))
    columns += [
        ("AUPRO@30% <=64px", _path("aupro_abs", "0.3", "<=64")),
        ("AUPIMO", _path("aupimo", "mean")),
    ]
    return columns


def decision_columns() -> list[tuple[str, Getter]]:
    """Decisions at the calibrated thresholds, then the oracle figures."""
    return [
        ("FAR", _path("decisions", "image", "false_alarm_rate")),
        ("precision", _path("decisions", "image", "precision")),
        ("recall", _path("decisions", "image", "recall")),
        ("F1", _path("decisions", "image", "f1")),
        ("SegF1", _path("decisions", "seg_f1")),
        ("oracle F1-max", _path("oracle", "image_f1_max")),
        ("oracle pixel F1-max", _path("oracle", "pixel_f1_max")),
        ("guaranteed FAR", _path("thresholds", "guaranteed_rate")),
    ]


def seg_f1_columns(results: Results) -> list[tuple[str, Getter]]:
    """SegF1 at each stored mask rule ("pixel", "segmentation", "+cleanup"; in the order
    the results list them), then the oracle pixel F1-max; none without any rule."""
    rules = list(dict.fromkeys(name for r in results.values() for name in r.get("seg_f1_at", {})))
    if not rules:
        return []
    return [
        *((f"SegF1 {rule}", _path("seg_f1_at", rule)) for rule in rules),
        ("oracle pixel F1-max", _path("oracle", "pixel_f1_max")),
    ]


SEG_F1_TEXT = (
    "SegF1 of masks made at each stored threshold: `pixel` is the max-based pixel "
    "threshold (calibrated on the maxima of the calibration images' maps), "
    "`segmentation` the risk-controlled one (`--pixel-false-alarm-rate` β), `+cleanup` "
    "the same after the run's mask clean-up. The predicted masks (the SegF1 column of "
    "the decisions table) use the segmentation threshold when one was set, else the "
    "pixel threshold, with the clean-up when there is one. The oracle pixel F1-max "
    "picks its threshold using the test labels."
)


def seg_f1_section(
    results: Results, methods: Sequence[str], categories: Sequence[str]
) -> list[str]:
    """The lines of the "Segmentation F1 per threshold" section; none without SegF1."""
    columns = seg_f1_columns(results)
    if not columns:
        return []
    return [
        "",
        "## Segmentation F1 per threshold",
        "",
        SEG_F1_TEXT,
        "",
        *markdown_table(
            ["method", "category", *(name for name, _ in columns)],
            table_rows(results, methods, categories, columns),
        ),
    ]


def run_columns() -> list[tuple[str, Getter]]:
    return [
        ("infer s/img", _path("run", "inference_seconds_per_image_median")),
        ("peak MiB", _path("run", "peak_rss_mib")),
        ("train s", _path("run", "train_seconds")),
    ]


def low_res_columns(size: int) -> list[tuple[str, Getter]]:
    """The side-by-side table: the original resolution next to N × N, at 30 % and 5 %."""
    columns: list[tuple[str, Getter]] = []
    for limit in ("0.3", "0.05"):
        for size_bin in ("q1", "all"):
            name = f"AUPRO@{float(limit):.0%} {size_bin}"
            columns += [
                (name, _path("aupro", limit, size_bin)),
                (f"at {size}² {size_bin}", _path("low_res_protocol", "aupro", limit, size_bin)),
            ]
    columns += [
        ("P-AUROC", _path("p_auroc")),
        (f"at {size}² P-AUROC", _path("low_res_protocol", "p_auroc")),
    ]
    return columns


def _low_res_size(result: dict[str, Any]) -> int | None:
    return (result.get("low_res_protocol") or {}).get("size")


def low_res_sections(
    results: Results, methods: Sequence[str], categories: Sequence[str]
) -> list[str]:
    """One side-by-side table per low-resolution size, of the results scored at it (a zoo
    model at its own input, the others at `--low-res-protocol`)."""
    lines: list[str] = []
    for size in sorted({s for r in results.values() if (s := _low_res_size(r)) is not None}):
        side = low_res_columns(size)
        at_size = {k: r for k, r in results.items() if _low_res_size(r) == size}
        lines += ["", f"## The original resolution against the {size} × {size} protocol", ""]
        lines += markdown_table(
            ["method", "category", *(n for n, _ in side)],
            table_rows(at_size, methods, categories, side),
        )
    return lines


ZOO_TEXT = (
    "anomalib's models, trained through anomalib's Engine on the same training images as "
    "every method; maps are raw (anomalib's normalisation off), upsampled bilinearly to each "
    "image's size (with `+tiles`: native windows blended, smoothed and cropped as l2bt's "
    "tiles). Their low-resolution table scores the same maps as anomalib's own protocol does "
    "(masks resized to the model's input)."
)
ZOO_RANDOM_WARNING = (
    "**Warning: random backbones; these scores say nothing about the methods** (a "
    "smoke test of the pipeline, not a measurement)."
)


def zoo_columns() -> list[tuple[str, Getter]]:
    """What made each anomalib model's figures (from its result's description)."""
    described = ("run", "description")
    return [
        ("anomalib class", _path(*described, "anomalib_class")),
        ("backbone", _path(*described, "backbone")),
        ("weights", _path(*described, "backbone_weights")),
        ("input px", _path(*described, "input_size")),
        ("input", _path(*described, "input_mode")),
        ("schedule", _path(*described, "schedule")),
        ("epochs run", _path(*described, "training", "epochs")),
        ("steps run", _path(*described, "training", "steps")),
    ]


def zoo_section(results: Results, methods: Sequence[str], categories: Sequence[str]) -> list[str]:
    """The lines of the "anomalib models" section; none without a zoo method."""
    zoo = {k: r for k, r in results.items() if _path("run", "description", "anomalib_class")(r)}
    if not zoo:
        return []
    columns = zoo_columns()
    weights = _path("run", "description", "backbone_weights")
    random = any(weights(r) == "random" for r in zoo.values())
    return [
        "",
        "## anomalib models",
        "",
        ZOO_TEXT,
        *(["", ZOO_RANDOM_WARNING] if random else []),
        "",
        *markdown_table(
            ["method", "category", *(n for n, _ in columns)],
            [r for r in table_rows(zoo, methods, categories, columns) if r[1] != "mean"],
        ),
    ]


def load_results(out: Path, methods: Sequence[str], categories: Sequence[str]) -> Results:
    found = {}
    for method in methods:
        for category in categories:
            path = out / "results" / method / f"{category}.json"
            if path.is_file():
                found[(method, category)] = json.loads(path.read_text())
    return found


def table_rows(
    results: Results,
    methods: Sequence[str],
    categories: Sequence[str],
    columns: Sequence[tuple[str, Getter]],
) -> list[list[Any]]:
    """Rows [method, category, *values]; a 'mean' row per method over its categories."""
    rows = []
    for method in methods:
        mine = [results[(method, c)] for c in categories if (method, c) in results]
        for result in mine:
            rows.append([method, result["category"], *(get(result) for _, get in columns)])
        if len(mine) > 1:
            means = []
            for _, get in columns:
                values = [v for r in mine if isinstance(v := get(r), int | float)]
                means.append(statistics.fmean(values) if values else None)
            rows.append([method, "mean", *means])
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(_cell(v) for v in row) + " |" for row in rows),
    ]


def protocol_text(results: Results) -> list[str]:
    """The header of results.md: how every figure below was made."""
    any_result = next(iter(results.values()), {})
    thresholds = [r["thresholds"] for r in results.values() if r.get("thresholds")]
    lines = [
        "Every figure is computed at the original resolution of each test image, against "
        "its full-resolution mask (never resized). AUPRO at FPR limits 30/10/5/1 % is exact "
        "(every distinct score a threshold), for all defects and for the smallest quarter "
        "(q1) of defect areas of the category; `<=64px` bins regions by absolute area. rho "
        "= mean AUPRO over q1, q2, q3, all × AUPRO(q1)/AUPRO(all). AUPIMO: per defective "
        "image, FPR 1e-5 to 1e-4 of the defect-free images. Times are medians per image; "
        "memory is peak RSS.",
    ]
    if thresholds:
        alpha = thresholds[0]["false_alarm_rate"]
        sizes = sorted({t["n_calibration"] for t in thresholds})
        lines += [
            "",
            f"Decisions use thresholds calibrated on defect-free images the methods "
            f"never trained on ({', '.join(map(str, sizes))} per category), never on "
            f"the test set: split-conformal at a false-alarm rate of {alpha:g}. "
            "`guaranteed FAR` is what the calibration set guarantees (the asked rate, "
            "or 1/(n+1) when n is too small); `FAR` is the rate observed on the test's "
            "defect-free images. SegF1 is the pixel F1 of the predicted masks. "
            "**Oracle** figures pick the best threshold using the test labels: an upper "
            "bound to compare with, not a decision anyone could make.",
        ]
    else:
        lines += [
            "",
            "No calibration images (`--calibration 0` or too few training images): "
            "no thresholds and no decisions; oracle figures use the test labels.",
        ]
    low_res = any_result.get("low_res_protocol")
    if low_res:
        lines += [
            "",
            f"The low-resolution protocol (last table): the same maps scored as "
            f"low-resolution benchmarks do, map bilinear and mask nearest-neighbour "
            f"resized to {low_res['size']} × {low_res['size']}.",
        ]
    return lines


def made_by(out: Path) -> list[str]:
    """The lines saying what made the figures, from the run's benchmark.json."""
    path = out / "benchmark.json"
    if not path.is_file():
        return ["What made these figures is unknown (no benchmark.json)."]
    return ["## What made these figures", "", *from_benchmark(json.loads(path.read_text())).lines()]


def write_summary(out: Path, methods: Sequence[str], categories: Sequence[str]) -> None:
    from l2bt.report.plots import write_plots

    results = load_results(out, methods, categories)
    columns = [*metric_columns(), *decision_columns(), *run_columns()]
    header = ["method", "category", *(name for name, _ in columns)]
    rows = table_rows(results, methods, categories, columns)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows([[("" if v is None else v) for v in row] for row in rows])
    write_text_atomic(out / "results.csv", buffer.getvalue())

    lines = ["# Benchmark results", "", *made_by(out), "", *protocol_text(results), ""]
    main = [*metric_columns(), *run_columns()]
    lines += markdown_table(
        ["method", "category", *(n for n, _ in main)],
        table_rows(results, methods, categories, main),
    )
    decisions = decision_columns()
    lines += ["", "## Decisions", ""]
    lines += markdown_table(
        ["method", "category", *(n for n, _ in decisions)],
        table_rows(results, methods, categories, decisions),
    )
    lines += seg_f1_section(results, methods, categories)
    lines += low_res_sections(results, methods, categories)
    lines += zoo_section(results, methods, categories)
    missing = [f"{m}/{c}" for m in methods for c in categories if (m, c) not in results]
    if missing:
        lines += ["", f"Not finished yet: {', '.join(missing)}."]
    write_text_atomic(out / "results.md", "\n".join(lines) + "\n")
    write_plots(out, results, methods, categories)
