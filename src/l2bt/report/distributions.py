"""The score distributions behind a decision: calibration images, defect-free and
defective test images, and the calibrated image threshold, one panel per method.

A threshold set on defect-free images alone is only as good as the gap between the
defect-free and the defective scores; this figure shows that gap, and where the
threshold falls in it, at a glance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from l2bt.report.figures import legend_beside, plt

SERIES = (
    ("calibration", "calibration (good, held out)", "tab:green"),
    ("test_good", "test: good", "tab:blue"),
    ("test_defective", "test: defective", "tab:red"),
)


def score_distributions_figure(results: dict[str, dict[str, Any]], category: str) -> Figure | None:
    """Histograms of image scores per method, the image threshold as a vertical line;
    the legend beside the last panel."""
    methods = [m for m, r in results.items() if r.get("score_distribution")]
    if not methods:
        return None
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.4), squeeze=False)
    for ax, method in zip(axes[0], methods, strict=True):
        scores = results[method]["score_distribution"]
        values = [v for name, _, _ in SERIES for v in scores.get(name, [])]
        bins = np.histogram_bin_edges(values, bins=30) if values else 10
        for name, label, colour in SERIES:
            if scores.get(name):
                ax.hist(scores[name], bins=bins, alpha=0.5, color=colour, label=label, density=True)
        thresholds = results[method].get("thresholds")
        if thresholds:
            ax.axvline(
                thresholds["image"],
                color="black",
                linestyle="--",
                label=f"threshold (FAR ≤ {thresholds['guaranteed_rate']:.3g})",
            )
        ax.set_title(method)
        ax.set_xlabel("image score")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("density")
    legend_beside(axes[0][-1], fontsize=7)
    fig.suptitle(f"{category}: image scores and the calibrated threshold", y=1.03)
    return fig
