"""The paper's argument in one picture: AUPRO by defect size at the original resolution
and under the low-resolution protocol, one line per method, solid and dashed.

Low-resolution benchmarks resize maps and masks to N × N before scoring; small defects
shrink to a few pixels or vanish, so their figures look better than they are. Where the
dashed line sits above the solid one on the smallest bin, the low-resolution protocol
flatters the method.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from l2bt.metrics.size_bins import SIZE_BINS
from l2bt.report.figures import plt, save_figure


def plot_protocols(
    per_method: dict[str, dict[str, Any]], title: str, path: Path, limit: str = "0.3"
) -> None:
    """`per_method`: method -> {"aupro": …, "low_res_protocol": {"size", "aupro"}}."""
    methods = {m: r for m, r in per_method.items() if r.get("low_res_protocol")}
    if not methods:
        return
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
    ax.set_xticks(x, SIZE_BINS)
    ax.set_xlabel("defects up to size quantile (q1: the smallest quarter)")
    ax.set_ylabel(f"AUPRO @ {float(limit):.0%} FPR")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title)
    save_figure(fig, path)
