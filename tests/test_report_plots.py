"""The benchmark's figures: legends beside the axes, never over the data, and the
size bins' bounds in pixels under their ticks."""

import pytest

from l2bt.report.distributions import score_distributions_figure
from l2bt.report.figures import plt
from l2bt.report.plots import aupro_by_size_figure, pro_curves_figure
from l2bt.report.protocols import protocols_figure

LIMITS = ("0.3", "0.1", "0.05", "0.01")
BINS = ("q1", "q2", "q3", "all")
QUANTILES = [53.75, 284.0, 1020.5]


def aupro(level):
    return {limit: {b: level + 0.1 * i for i, b in enumerate(BINS)} for limit in LIMITS}


def result(level):
    """What the figures read from one method's results JSON."""
    fpr = [0.0, 0.1, 0.2, 0.3]
    return {
        "size_quantiles_px": QUANTILES,
        "aupro": aupro(level),
        "pro_curves": {"fpr": fpr, **{b: [0.0, level, level + 0.1, 0.9] for b in BINS}},
        "score_distribution": {
            "calibration": [0.1, 0.2, 0.3],
            "test_good": [0.15, 0.25],
            "test_defective": [0.6, 0.9],
        },
        "thresholds": {"image": 0.35, "guaranteed_rate": 0.25},
        "low_res_protocol": {"size": 256, "aupro": aupro(level + 0.05)},
    }


RESULTS = {"l2bt": result(0.3), "patchcore": result(0.5)}
FIGURES = {
    "pro curves": lambda: pro_curves_figure(RESULTS, "tile"),
    "aupro by size": lambda: aupro_by_size_figure(
        {m: r["aupro"] for m, r in RESULTS.items()}, "tile", QUANTILES
    ),
    "scores": lambda: score_distributions_figure(RESULTS, "tile"),
    "protocols": lambda: protocols_figure(RESULTS, "tile", QUANTILES),
}


@pytest.mark.parametrize("name", FIGURES)
def test_no_legend_covers_any_axes(name):
    fig = FIGURES[name]()
    fig.canvas.draw()
    legends = [legend for ax in fig.axes if (legend := ax.get_legend()) is not None]
    legends += fig.legends
    assert legends, "every figure has a legend"
    renderer = fig.canvas.get_renderer()
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), ax.get_title()
    plt.close(fig)


@pytest.mark.parametrize("name", ["aupro by size", "protocols"])
def test_size_bins_show_their_bounds_in_pixels(name):
    fig = FIGURES[name]()
    for ax in fig.axes:
        labels = [label.get_text() for label in ax.get_xticklabels()]
        assert labels == ["q1\n≤53 px", "q2\n≤284 px", "q3\n≤1020 px", "all"]
    plt.close(fig)


def test_a_mean_over_categories_names_the_bins_alone():
    fig = aupro_by_size_figure({"l2bt": aupro(0.3)}, "mean")
    assert [label.get_text() for label in fig.axes[0].get_xticklabels()] == list(BINS)
    plt.close(fig)
