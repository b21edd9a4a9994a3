"""Large buffers returned to the system when freed, so that memory stays bounded.

glibc's malloc serves a request above its mmap threshold with a mapping of its own,
unmapped when freed, but it raises that threshold to the size of each such buffer
freed (up to 32 MiB). After the first large tensor is freed, the same-sized float
temporaries of a loop over image-sized or batch-sized tensors come from the heap, which
fragments: resident memory then swings by hundreds of MiB above what is in use
(benchmarks/README.md, tiles: memory). Fixing the threshold at `MMAP_THRESHOLD` keeps
every large buffer its own mapping. The cost is a page fault per 4 KiB of each new
large buffer, small next to the arithmetic that fills it. A no-op where the C library
has no `mallopt` (macOS, musl's own allocator).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # mallopt's parameter number (glibc malloc.h)
MMAP_THRESHOLD = 4 << 20  # bytes


def bound_large_buffers(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at `threshold` bytes for this process; whether it was."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    return mallopt is not None and bool(mallopt(M_MMAP_THRESHOLD, threshold))
