"""Matplotlib without a display, and figures written atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from l2bt.utils.atomic import atomic_file

__all__ = ["plt", "save_figure"]


def save_figure(fig: Figure | None, path: Path) -> None:
    """Write `fig` (legends outside the axes included) and close it; nothing for None."""
    if fig is None:
        return
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
