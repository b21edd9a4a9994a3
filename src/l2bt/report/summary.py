"""The benchmark's summary: results.csv and results.md, one row per (method, category)
and a mean row per method, like the paper's tables; then the plots."""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from l2bt.atomic import write_text_atomic

LIMITS = ("0.3", "0.1", "0.05", "0.01")


def _columns() -> list[tuple[str, Any]]:
    """(column name, getter on a result dict) for every column of the table."""
    columns: list[tuple[str, Any]] = [
        ("I-AUROC", lambda r: r["i_auroc"]),
        ("P-AUROC", lambda r: r["p_auroc"]),
    ]
    for size_bin in ("all", "q1"):
        for limit in LIMITS:
            columns.append((f"AUPRO@{float(limit):.0%} {size_bin}",
                            lambda r, b=size_bin, lim=limit: r["aupro"][lim][b]))
    for limit in LIMITS:
        columns.append((f"rho@{float(limit):.0%}",
                        lambda r, lim=limit: r["robustness"][lim]["rho"]))
    columns += [
        ("infer s/img", lambda r: r.get("run", {}).get("inference_seconds_per_image_median")),
        ("peak MiB", lambda r: r.get("run", {}).get("peak_rss_mib")),
        ("train s", lambda r: r.get("run", {}).get("train_seconds")),
    ]
    return columns


def load_results(out: Path, methods: Sequence[str], categories: Sequence[str]
                 ) -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for method in methods:
        for category in categories:
            path = out / "results" / method / f"{category}.json"
            if path.is_file():
                found[(method, category)] = json.loads(path.read_text())
    return found


def table_rows(results: dict[tuple[str, str], dict[str, Any]], methods: Sequence[str],
               categories: Sequence[str]) -> list[list[Any]]:
    """Rows [method, category, *values]; a 'mean' row per method over its categories."""
    columns = _columns()
    rows = []
    for method in methods:
        mine = [results[(method, c)] for c in categories if (method, c) in results]
        for result in mine:
            rows.append([method, result["category"], *(get(result) for _, get in columns)])
        if len(mine) > 1:
            means = []
            for _, get in columns:
                values = [get(r) for r in mine if get(r) is not None]
                means.append(statistics.fmean(values) if values else None)
            rows.append([method, "mean", *means])
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def write_summary(out: Path, methods: Sequence[str], categories: Sequence[str]) -> None:
    from l2bt.report.plots import write_plots

    results = load_results(out, methods, categories)
    header = ["method", "category", *(name for name, _ in _columns())]
    rows = table_rows(results, methods, categories)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows([[("" if v is None else v) for v in row] for row in rows])
    write_text_atomic(out / "results.csv", buffer.getvalue())
    lines = ["# Benchmark results", "",
             "AUPRO at FPR limits, for all defects and for the smallest quarter (q1) of defect "
             "areas, scored at the original resolution. rho = mean AUPRO over q1, q2, q3, all × "
             "AUPRO(q1)/AUPRO(all). Times are medians per image; memory is peak RSS.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    missing = [f"{m}/{c}" for m in methods for c in categories if (m, c) not in results]
    if missing:
        lines += ["", f"Not finished yet: {', '.join(missing)}."]
    write_text_atomic(out / "results.md", "\n".join(lines) + "\n")
    write_plots(out, results, methods, categories)
