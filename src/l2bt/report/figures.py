"""Matplotlib without a display, figures written atomically, legends beside the axes
(never over the data) and size-bin tick labels with their bounds in pixels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.legend import Legend

from l2bt.metrics.size_bins import SIZE_BINS
from l2bt.utils.atomic import atomic_file

__all__ = ["legend_beside", "plt", "save_figure", "size_bin_labels"]


def save_figure(fig: Figure | None, path: Path) -> None:
    """Write `fig` (legends outside the axes included) and close it; nothing for None."""
    if fig is None:
        return
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)


def legend_beside(ax: Axes, fontsize: float = 8) -> Legend:
    """The legend of `ax` to the right of it, outside every axes of a row of panels
    when `ax` is the last of them."""
    return ax.legend(
        loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=fontsize
    )


def size_bin_labels(quantiles: Sequence[float] | None) -> list[str]:
    """Tick labels of the cumulative size bins: "q1\\n≤53 px" for the regions of area
    at most the first quartile (areas are whole pixels, so the bound is rounded down),
    and so on; "all" alone. Plain bin names without quantiles (e.g. a mean over
    categories, whose bounds differ)."""
    if quantiles is None:
        return list(SIZE_BINS)
    quartiles = zip(SIZE_BINS[:-1], quantiles, strict=True)
    return [*(f"{name}\n≤{math.floor(q)} px" for name, q in quartiles), SIZE_BINS[-1]]
