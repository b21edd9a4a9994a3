"""Matplotlib without a display, and figures written atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from l2bt.atomic import atomic_file

__all__ = ["plt", "save_figure"]


def save_figure(fig: plt.Figure, path: Path) -> None:
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
