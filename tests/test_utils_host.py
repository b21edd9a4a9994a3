"""host_map: the results of map, in order, whatever the threads; inline on one core."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from l2bt.anomaly_map import image_score
from l2bt.utils import host
from l2bt.utils.host import host_map


def test_host_map_equals_map_in_order_with_uneven_work() -> None:
    rng = np.random.default_rng(0)
    delays = rng.uniform(0.0, 0.004, 23)  # later items can finish first

    def slow_square(index: int, delay: float) -> int:
        time.sleep(delay)
        return index * index

    assert host_map(slow_square, range(23), delays) == [i * i for i in range(23)]


def test_host_map_of_nothing_is_empty_and_lengths_must_match() -> None:
    assert host_map(abs, []) == []
    with pytest.raises(ValueError):
        host_map(pow, [1, 2], [3])


def test_one_core_or_one_item_runs_in_the_callers_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caller = threading.get_ident()
    assert host_map(lambda _: threading.get_ident(), [0]) == [caller]
    monkeypatch.setattr(host, "usable_cores", lambda: 1)
    assert set(host_map(lambda _: threading.get_ident(), range(5))) == {caller}


def test_scores_on_threads_equal_scores_one_by_one() -> None:
    rng = np.random.default_rng(1)
    maps = [rng.random((h, w), dtype=np.float32) for h, w in [(1, 1), (37, 91), (300, 200)]]
    maps.append(np.zeros((64, 64), np.float32))  # all ties
    assert host_map(image_score, maps) == [image_score(m) for m in maps]
