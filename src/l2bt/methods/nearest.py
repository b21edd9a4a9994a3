"""Exact nearest-neighbour search of query rows in a memory bank, in bounded blocks.

The bank is scanned block by block with ‖q‖² + ‖b‖² − 2 q·b (one matrix product per
block, so the work runs at matmul speed), keeping a running best distance and index per
query. The winning neighbour's distance is then recomputed from the coordinate
difference: the matmul form loses precision when q ≈ b (a query equal to a bank row
comes out near sqrt(eps)·‖q‖, ~5e-4 for our descriptors in float32, not 0); the direct
form does not.

Memory: one (query_chunk, bank_chunk) block of distances at a time, besides the inputs.
"""

from __future__ import annotations

import torch


def squared_norms(rows: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """(m, d) -> (m,) squared L2 norms, `chunk` rows at a time (no (m, d) temporary).

    Pass a bank's norms to `nearest_neighbours` to compute them once, not per call.
    """
    norms = torch.empty(rows.shape[0], dtype=rows.dtype, device=rows.device)
    for start in range(0, rows.shape[0], chunk):
        norms[start : start + chunk] = rows[start : start + chunk].square().sum(dim=1)
    return norms


def nearest_neighbours(
    queries: torch.Tensor,
    bank: torch.Tensor,
    bank_squared_norms: torch.Tensor | None = None,
    query_chunk: int = 4096,
    bank_chunk: int = 8192,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, d) queries, (m, d) bank -> ((n,) Euclidean distance to the nearest bank row,
    (n,) its index). Exact search: every bank row is compared."""
    if bank_squared_norms is None:
        bank_squared_norms = squared_norms(bank)
    distances = torch.empty(queries.shape[0], dtype=queries.dtype, device=queries.device)
    indices = torch.empty(queries.shape[0], dtype=torch.long, device=queries.device)
    for start in range(0, queries.shape[0], query_chunk):
        rows = slice(start, start + query_chunk)
        best = _nearest_in_blocks(queries[rows], bank, bank_squared_norms, bank_chunk)
        indices[rows] = best
        distances[rows] = (queries[rows] - bank[best]).norm(dim=1)  # direct, no cancellation
    return distances, indices


def nearest_distances(
    queries: torch.Tensor,
    bank: torch.Tensor,
    bank_squared_norms: torch.Tensor | None = None,
    query_chunk: int = 4096,
    bank_chunk: int = 8192,
) -> torch.Tensor:
    """(n, d) queries -> (n,) Euclidean distance to the nearest of the (m, d) bank rows."""
    return nearest_neighbours(queries, bank, bank_squared_norms, query_chunk, bank_chunk)[0]


def _nearest_in_blocks(
    queries: torch.Tensor, bank: torch.Tensor, bank_squared_norms: torch.Tensor, bank_chunk: int
) -> torch.Tensor:
    """(q, d) queries -> (q,) index of the nearest bank row, scanning `bank_chunk` rows at once.

    ‖q‖² is the same for every bank row of a query, so it is left out of the comparison.
    """
    best_value = torch.full(
        (queries.shape[0],), float("inf"), dtype=queries.dtype, device=queries.device
    )
    best_index = torch.zeros(queries.shape[0], dtype=torch.long, device=queries.device)
    for start in range(0, bank.shape[0], bank_chunk):
        block = bank[start : start + bank_chunk]
        # (q, d) @ (d, c) -> (q, c): ‖b‖² − 2 q·b, the squared distance less ‖q‖²
        partial = torch.addmm(
            bank_squared_norms[start : start + bank_chunk][None], queries, block.T, alpha=-2.0
        )
        value, index = partial.min(dim=1)
        better = value < best_value  # strict: an earlier block wins ties
        best_value = torch.where(better, value, best_value)
        best_index = torch.where(better, index + start, best_index)
    return best_index
