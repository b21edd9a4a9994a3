"""Figures for people: PRO curves per size bin, AUPRO per size bin per method (the bins'
bounds in pixels under each tick), and a close-up panel of the smallest defects with
every method's map. Legends sit beside the axes, never over the data."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from l2bt.data.image_io import read_image, read_mask
from l2bt.data.sample import CategorySplit
from l2bt.maps.layout import MapsFolder, read_map
from l2bt.metrics import label_regions
from l2bt.metrics.size_bins import SIZE_BINS
from l2bt.report.distributions import score_distributions_figure
from l2bt.report.figures import legend_beside, plt, save_figure, size_bin_labels
from l2bt.report.protocols import protocols_figure

LIMITS = ("0.3", "0.1", "0.05", "0.01")
BIN_LABELS = {
    "q1": "smallest 25 %",
    "q2": "smallest 50 %",
    "q3": "smallest 75 %",
    "all": "all defects",
}


def pro_curves_figure(results: dict[str, dict[str, Any]], category: str) -> Figure | None:
    """One panel per method: PRO against FPR (≤ 30 %) for each cumulative size bin."""
    methods = [m for m, r in results.items() if r.get("pro_curves")]
    if not methods:
        return None
    fig, axes = plt.subplots(
        1, len(methods), figsize=(4.2 * len(methods), 3.6), squeeze=False, sharey=True
    )
    for ax, method in zip(axes[0], methods, strict=True):
        curves = results[method]["pro_curves"]
        for size_bin in SIZE_BINS:
            if size_bin in curves:
                ax.plot(curves["fpr"], curves[size_bin], label=BIN_LABELS[size_bin])
        ax.set_title(method)
        ax.set_xlabel("false positive rate")
        ax.set_xlim(0, 0.3)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("per-region overlap (PRO)")
    legend_beside(axes[0][-1])
    fig.suptitle(f"{category}: PRO curves by defect size", y=1.03)
    return fig


def aupro_by_size_figure(
    per_method: dict[str, dict[str, dict[str, float | None]]],
    title: str,
    quantiles: Sequence[float] | None = None,
) -> Figure | None:
    """One panel per FPR limit: AUPRO over the size bins, one line per method; each
    bin's bound in pixels under its tick when the region-area `quantiles` are known."""
    if not per_method:
        return None
    fig, axes = plt.subplots(1, len(LIMITS), figsize=(15, 3.6), sharey=True)
    x = np.arange(len(SIZE_BINS))
    for ax, limit in zip(axes, LIMITS, strict=True):
        for method, aupro in per_method.items():
            values = [aupro[limit][b] if aupro[limit][b] is not None else np.nan for b in SIZE_BINS]
            ax.plot(x, values, marker="o", label=method)
        ax.set_xticks(x, size_bin_labels(quantiles))
        ax.set_xlabel("defects up to size quantile")
        ax.set_title(f"AUPRO @ {float(limit):.0%} FPR")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("AUPRO")
    legend_beside(axes[-1])
    fig.suptitle(title, y=1.03)
    return fig


def category_quantiles(results: Sequence[dict[str, Any]]) -> list[float] | None:
    """The region-area quartiles of a category (the same for every method's result)."""
    return next((r["size_quantiles_px"] for r in results if r.get("size_quantiles_px")), None)


def _mean_aupro(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    mean: dict[str, dict[str, float | None]] = {}
    for limit in LIMITS:
        mean[limit] = {}
        for size_bin in SIZE_BINS:
            values = [
                r["aupro"][limit][size_bin]
                for r in results
                if r["aupro"][limit][size_bin] is not None
            ]
            mean[limit][size_bin] = statistics.fmean(values) if values else None
    return mean


def write_plots(
    out: Path,
    results: dict[tuple[str, str], dict[str, Any]],
    methods: Sequence[str],
    categories: Sequence[str],
) -> None:
    plots = out / "plots"
    for category in categories:
        mine = {m: results[(m, category)] for m in methods if (m, category) in results}
        quantiles = category_quantiles(list(mine.values()))
        save_figure(pro_curves_figure(mine, category), plots / f"pro_curves_{category}.png")
        save_figure(
            aupro_by_size_figure(
                {m: r["aupro"] for m, r in mine.items()},
                f"{category}: AUPRO by defect size",
                quantiles,
            ),
            plots / f"aupro_by_size_{category}.png",
        )
        save_figure(score_distributions_figure(mine, category), plots / f"scores_{category}.png")
        save_figure(
            protocols_figure(
                mine, f"{category}: original resolution vs low-resolution protocol", quantiles
            ),
            plots / f"protocols_{category}.png",
        )
    if len(categories) > 1:
        done = {m: [results[(m, c)] for c in categories if (m, c) in results] for m in methods}
        means = {m: _mean_aupro(mine) for m, mine in done.items() if mine}
        save_figure(
            aupro_by_size_figure(means, "mean over categories: AUPRO by defect size"),
            plots / "aupro_by_size_mean.png",
        )
        low_res = {
            m: {
                "aupro": _mean_aupro(mine),
                "low_res_protocol": {
                    **mine[0]["low_res_protocol"],
                    "aupro": _mean_aupro([r["low_res_protocol"] for r in mine]),
                },
            }
            for m, mine in done.items()
            if mine and all(r.get("low_res_protocol") for r in mine)
        }
        save_figure(
            protocols_figure(low_res, "mean over categories: original vs low-resolution protocol"),
            plots / "protocols_mean.png",
        )


def _smallest_defects(split: CategorySplit, count: int) -> list[tuple[Any, tuple[int, ...]]]:
    """The `count` test samples whose smallest region is smallest, with that region's box."""
    found = []
    for sample in split.evaluable_test:
        if sample.mask is None:
            continue
        labels, n = label_regions(read_mask(sample.mask, sample.mask_threshold))
        if n == 0:
            continue
        areas = np.bincount(labels.ravel())[1:]
        region = int(np.argmin(areas)) + 1
        rows, cols = np.nonzero(labels == region)
        found.append((int(areas.min()), sample, (rows.min(), rows.max(), cols.min(), cols.max())))
    found.sort(key=lambda item: item[0])
    return [(sample, box) for _, sample, box in found[:count]]


def _crop_window(
    box: tuple[int, ...], shape: tuple[int, int], minimum: int = 96
) -> tuple[slice, slice]:
    """A square window around a defect: four times its size, at least `minimum` px."""
    top, bottom, left, right = box
    side = max(minimum, 4 * max(bottom - top + 1, right - left + 1))
    cy, cx = (top + bottom) // 2, (left + right) // 2
    y0 = int(np.clip(cy - side // 2, 0, max(shape[0] - side, 0)))
    x0 = int(np.clip(cx - side // 2, 0, max(shape[1] - side, 0)))
    return slice(y0, y0 + side), slice(x0, x0 + side)


def plot_smallest_defects(
    out: Path, split: CategorySplit, methods: Sequence[str], count: int = 3
) -> None:
    """Close-ups of the smallest defects: image with the mask's outline, then each map."""
    chosen = _smallest_defects(split, count)
    available = [m for m in methods if (out / "maps" / m / split.name).is_dir()]
    if not chosen or not available:
        return
    cols = 1 + len(available)
    fig, axes = plt.subplots(
        len(chosen), cols, figsize=(2.6 * cols, 2.6 * len(chosen)), squeeze=False
    )
    for row, (sample, box) in enumerate(chosen):
        image = read_image(sample.image)
        mask = read_mask(sample.mask, sample.mask_threshold)
        window = _crop_window(box, mask.shape)
        axes[row][0].imshow(image[window])
        axes[row][0].contour(mask[window], levels=[0.5], colors="lime", linewidths=1)
        area = int(mask[window].sum())
        axes[row][0].set_title(f"{sample.key.rsplit('/', 1)[-1]} (defect {area} px)", fontsize=8)
        for col, method in enumerate(available, start=1):
            path = MapsFolder(out / "maps" / method / split.name).map(sample.key)
            if path.is_file():
                axes[row][col].imshow(read_map(path)[window], cmap="jet")
                axes[row][col].contour(mask[window], levels=[0.5], colors="white", linewidths=1)
            axes[row][col].set_title(method, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{split.name}: the smallest defects, close up")
    save_figure(fig, out / "plots" / f"smallest_defects_{split.name}.png")
