"""maps/overlay.py: annotate adds a colour bar and the score below the picture."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps

from l2bt.maps.overlay import annotate, colour_bar_height, outline, overlay


def test_annotate_adds_a_colour_bar_and_the_score_below_the_picture():
    rng = np.random.default_rng(1)
    height, width = 50, 240
    anomaly_map = rng.random((height, width))
    picture = outline(
        overlay(rng.integers(0, 255, (height, width, 3), np.uint8), anomaly_map, 0.0, 1.0),
        anomaly_map > 0.9,
    )
    drawn = annotate(picture, 0.0, 1.0, 0.8125, 0.5)
    strip = colour_bar_height(width)
    assert drawn.shape == (height + strip, width, 3) and drawn.dtype == np.uint8
    assert np.array_equal(drawn[:height], picture)  # the picture keeps its coordinates
    bar_row = drawn[height + strip // 5]  # inside the colour bar (its second fifth)
    coloured = np.flatnonzero(bar_row.sum(axis=1) > 0)
    jet = np.asarray(colormaps["jet"]([0.0, 1.0])[:, :3] * 255)
    assert np.abs(bar_row[coloured[0]] - jet[0]).max() <= 2
    assert np.abs(bar_row[coloured[-1]] - jet[1]).max() <= 2
    text = drawn[height + strip // 2 :]
    assert (text.min(axis=2) > 128).any()  # the labels, in white
    other = annotate(picture, 0.0, 1.0, 0.25, 0.5)
    assert not np.array_equal(other[height + strip // 2 :], text)  # the score is drawn
    no_threshold = annotate(picture, 0.0, 1.0, 0.8125)
    assert not np.array_equal(no_threshold[height + strip // 2 :], text)
    assert annotate(picture[:5, :7], -1.0, 1.0, 0.1).shape == (5 + colour_bar_height(7), 7, 3)
