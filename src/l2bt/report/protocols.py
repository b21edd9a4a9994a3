"""The paper's argument in one picture: AUPRO by defect size at the original resolution
and under the low-resolution protocol, one line per method, solid and dashed.

Low-resolution benchmarks resize maps and masks to N × N before scoring; small defects
shrink to a few pixels or vanish, so their figures look better than they are. Where the
dashed line sits above the solid one on the smallest bin, the low-resolution protocol
flatters the method.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from l2bt.metrics.size_bins import SIZE_BINS
from l2bt.report.figures import legend_beside, plt, size_bin_labels


def protocols_figure(
    per_method: dict[str, dict[str, Any]],
    title: str,
    quantiles: Sequence[float] | None = None,
    limit: str = "0.3",
) -> Figure | None:
    """`per_method`: method -> {"aupro": …, "low_res_protocol": {"size", "aupro"}};
    `quantiles`: the region-area quartiles at the original resolution, shown under the
    ticks. The legend sits beside the axes."""
    methods = {m: r for m, r in per_method.items() if r.get("low_res_protocol")}
    if not methods:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    x = np.arange(len(SIZE_BINS))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    size = next(iter(methods.values()))["low_res_protocol"]["size"]
    for i, (method, result) in enumerate(methods.items()):
        colour = colours[i % len(colours)]
        for aupro, style, protocol in (
            (result["aupro"], "-", "original"),
            (result["low_res_protocol"]["aupro"], "--", f"{size}²"),
        ):
            values = [np.nan if aupro[limit][b] is None else aupro[limit][b] for b in SIZE_BINS]
            ax.plot(x, values, style, marker="o", color=colour, label=f"{method}, {protocol}")
    ax.set_xticks(x, size_bin_labels(quantiles))
    xlabel = "defects up to size quantile (q1: the smallest quarter)"
    if quantiles is not None:
        xlabel += "; areas at the original resolution"
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"AUPRO @ {float(limit):.0%} FPR")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    legend_beside(ax, fontsize=7)
    ax.set_title(title)
    return fig
