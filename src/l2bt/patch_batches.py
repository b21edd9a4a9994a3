"""Training batches of patches drawn across every cached input: a block permutation.

The cache holds P patch rows, input after input (`l2bt.features`). They are cut into
blocks of b = gcd(N, 64) consecutive rows (the last block may be shorter); each epoch
permutes the blocks and cuts the permutation into steps of N / b blocks, so a step of
N patches reads N / b runs of b rows from all over the cache (disk and cache locality)
instead of the windows of a few images. Every row is in exactly one step per epoch
(ceil(ceil(P / b) / (N / b)) steps; the last step, and the one drawing the short block,
may hold fewer than N rows). Each step is a uniform draw of blocks without replacement,
so its mean loss is an unbiased estimate of the mean over all patches, and for a fixed
model the patch-weighted mean of an epoch's step losses is exactly that mean.
Reading a step costs N · D values of each layer, converted to float32 once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

BLOCK_ROWS = 64  # the longest run of consecutive rows a step reads


@dataclass(frozen=True)
class PatchBatches:
    """Steps of `batch` patches over `n_rows` cached rows, read in blocks of `block`."""

    n_rows: int
    batch: int

    def __post_init__(self) -> None:
        if self.n_rows < 1 or self.batch < 1:
            raise ValueError(f"need rows and a batch ≥ 1, got {self.n_rows} and {self.batch}")

    @property
    def block(self) -> int:
        return math.gcd(self.batch, BLOCK_ROWS)

    @property
    def n_blocks(self) -> int:
        return -(-self.n_rows // self.block)

    def __len__(self) -> int:
        """Steps per epoch."""
        return -(-self.n_blocks // (self.batch // self.block))

    def epoch(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """One epoch's steps: each a sorted array of the block numbers it reads."""
        order = rng.permutation(self.n_blocks)
        per_step = self.batch // self.block
        for start in range(0, self.n_blocks, per_step):
            yield np.sort(order[start : start + per_step])

    def rows(self, blocks: np.ndarray) -> np.ndarray:
        """The row numbers of `blocks` (for tests and references; `gather` reads them)."""
        starts = blocks[:, None] * self.block + np.arange(self.block)  # (k, 1) + (b,) -> (k, b)
        return starts[starts < self.n_rows]

    def gather(self, array: np.ndarray, blocks: np.ndarray) -> np.ndarray:
        """(rows of `blocks`, D) of a (P, D) array: full blocks in one indexing of a
        (P // b, b, D) view, the short last block appended when drawn."""
        block, full = self.block, self.n_rows // self.block
        dim = array.shape[1]
        view = array[: full * block].reshape(full, block, dim)  # (P, D) -> (P // b, b, D)
        inside = blocks[blocks < full]
        parts = [view[inside].reshape(-1, dim)]  # (k, b, D) -> (k·b, D)
        if len(inside) < len(blocks):  # the short last block
            parts.append(array[full * block :])
        return np.concatenate(parts) if len(parts) > 1 else parts[0]
