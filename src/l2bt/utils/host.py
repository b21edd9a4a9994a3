"""The host's cores, for work that runs beside the device.

`host_map` spreads per-image host work (PIL's resize, numpy's top-k partition: both
release the GIL) over the usable cores, so that on a GPU the host keeps up with the
teacher instead of preparing a batch's images one after another. No torch here: the
metrics import this module and never import torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

Result = TypeVar("Result")


def usable_cores() -> int:
    """The cores this process may run on (its affinity on Linux), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def host_map(function: Callable[..., Result], *iterables: Iterable[Any]) -> list[Result]:
    """`list(map(function, *iterables))` on up to `usable_cores()` threads, results in
    order (equal lengths required); a single item, or a single core, runs inline."""
    arguments = list(zip(*iterables, strict=True))
    workers = min(len(arguments), usable_cores())
    if workers < 2:
        return [function(*args) for args in arguments]
    with ThreadPoolExecutor(workers, thread_name_prefix="l2bt-host") as pool:
        return list(pool.map(lambda args: function(*args), arguments))
