"""`l2bt.utils.allocator` fixes glibc's mmap threshold: after a large buffer is freed, the
next buffer above the threshold still gets a mapping of its own (returned to the system
when freed) instead of coming from the heap, whose freed pages stay resident. Checked by
where the buffer lands (`/proc/self/maps`), not by how much memory a loop holds (that is
measured in benchmarks/bench_allocator.py)."""

import importlib
import platform
import subprocess
import sys

import pytest

WHERE = """
import sys
import numpy as np
from l2bt.utils.allocator import MMAP_THRESHOLD, bound_large_buffers

if sys.argv[1] == "bound":
    assert bound_large_buffers()
big = np.ones(2 * MMAP_THRESHOLD, np.uint8)  # 8 MiB, mapped on its own either way
del big  # unbounded, glibc now raises its threshold past 8 MiB
buffer = np.ones(MMAP_THRESHOLD + MMAP_THRESHOLD // 2, np.uint8)  # 6 MiB
address = buffer.ctypes.data
with open("/proc/self/maps") as maps:
    for line in maps:
        span, *rest = line.split()
        low, high = (int(part, 16) for part in span.split("-"))
        if low <= address < high:
            print(rest[-1] if len(rest) == 5 else "anonymous", high - low)
"""


def region_of_a_buffer_after_a_larger_one_is_freed(mode: str) -> tuple[str, int]:
    result = subprocess.run(
        [sys.executable, "-c", WHERE, mode], capture_output=True, text=True, check=True
    )
    name, size = result.stdout.split()
    return name, int(size)


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc"
)
def test_a_large_buffer_keeps_its_own_mapping_after_a_larger_one_is_freed():
    bounded, size = region_of_a_buffer_after_a_larger_one_is_freed("bound")
    assert bounded == "anonymous" and size < 7 << 20  # its own 6 MiB mapping
    unbounded, _ = region_of_a_buffer_after_a_larger_one_is_freed("default")
    assert unbounded == "[heap]"  # what the bound prevents: the heap, kept resident


def test_the_cli_sets_the_bound_once_for_every_verb(monkeypatch, tmp_path):
    entry = importlib.import_module("l2bt.cli.main")  # the module, not its `main`
    calls = []
    monkeypatch.setattr(entry, "bound_large_buffers", lambda: calls.append(1) or True)
    assert entry.main(["evaluate", "--data", str(tmp_path), "--category", "x", "--maps", "m"]) == 2
    assert calls == [1]
