"""The report's figures: legends beside the axes (never over the data) and size-bin tick
labels with their bounds in pixels (matplotlib set up by `l2bt.utils.figures`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.legend import Legend

from l2bt.metrics.size_bins import SIZE_BINS
from l2bt.utils.figures import plt, save_figure

__all__ = ["legend_beside", "plt", "save_figure", "size_bin_labels"]


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
