"""Greedy k-center coreset selection (PatchCore's memory-bank subsampling).

k-center greedy starts from one point and repeatedly adds the point farthest from those
chosen so far, so the largest distance from any point to its nearest chosen one (the
covering radius) shrinks as fast as a simple rule allows (within a factor 2 of the best
possible k centres). PatchCore runs it on a Johnson–Lindenstrauss random projection of
the features to a lower dimension, which keeps the order of distances well enough and
makes every step cheaper; `random_projection` gives that projection.

Bound: one running nearest-distance per point, so the selection needs the (N, d) points,
N squared norms, N running distances and one N-float buffer: (d + 3)·N floats. No N × N
(or even k × N) distance matrix ever exists. Time: k matrix–vector products of (N, d):
k·N·d multiply-adds, bound by reading the points once per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from l2bt.methods.nearest import squared_norms


@dataclass(frozen=True)
class Coreset:
    """Chosen row indices, in the order picked, and the covering radius after each pick.

    `radii[t]` is the largest distance from any point to its nearest of the first t + 1
    picks; it never grows with t, and the last one is the radius of the whole coreset.
    """

    indices: torch.Tensor  # (k,) int64
    radii: torch.Tensor  # (k,) float, same dtype as the points

    @property
    def covering_radius(self) -> float:
        return float(self.radii[-1])


def random_projection(dim: int, projected_dim: int, seed: int) -> torch.Tensor | None:
    """A seeded (dim, projected_dim) Gaussian projection, or None when dim ≤ projected_dim.

    Entries are N(0, 1/projected_dim), so squared distances are preserved on average.
    """
    if dim <= projected_dim:
        return None
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(dim, projected_dim, generator=generator) / projected_dim**0.5


def greedy_coreset(points: torch.Tensor, size: int, seed: int = 0,
                   progress: bool = False) -> Coreset:
    """k-center greedy coreset of (N, d) `points` with at most `size` picks.

    The first pick is drawn with a generator seeded by `seed`; every later pick is the
    point farthest from the picks so far, the lowest index on ties (as `torch.argmax`).
    Selection stops early once every point is at distance 0 from a pick (duplicates):
    a further pick would add nothing. The loop never reads a value back to the host, so
    on a GPU it runs without synchronising.
    """
    n = points.shape[0]
    size = max(1, min(size, n))
    generator = torch.Generator().manual_seed(seed)
    first = torch.randint(n, (1,), generator=generator).to(points.device)

    norms = squared_norms(points)  # (N,)
    nearest = torch.full((n,), float("inf"), dtype=points.dtype, device=points.device)
    buffer = torch.empty_like(nearest)  # (N,) squared distances to the newest pick
    indices = torch.empty(size, dtype=torch.long, device=points.device)
    radii = torch.empty(size, dtype=points.dtype, device=points.device)

    pick = first
    bar = tqdm(total=size, desc="coreset", unit="pick", disable=not progress, mininterval=1.0)
    with bar:
        for step in range(size):
            indices[step:step + 1] = pick
            _distances_to_row(points, norms, pick, out=buffer)
            torch.minimum(nearest, buffer, out=nearest)
            nearest.index_fill_(0, pick, 0.0)  # a pick covers itself exactly
            pick = nearest.argmax().unsqueeze(0)  # (1,), stays on the device
            radii[step:step + 1] = nearest[pick]
            if step % 1024 == 1023 or step == size - 1:
                bar.update(step + 1 - bar.n)
    radii = radii.clamp_min(0).sqrt()
    return _drop_redundant(Coreset(indices.cpu(), radii.cpu()))


def _distances_to_row(points: torch.Tensor, norms: torch.Tensor, row: torch.Tensor,
                      out: torch.Tensor) -> None:
    """Squared distances of every point to points[row] (row: (1,) index), into `out` (N,);
    `norms` (N,) are the points' squared norms.

    ‖x − c‖² = ‖x‖² + ‖c‖² − 2 x·c: one matrix–vector product and no (N, d) temporary.
    """
    centre = points.index_select(0, row)[0]  # (1, d) -> (d,)
    torch.mv(points, centre, out=out)
    out.mul_(-2.0).add_(norms).add_(norms.index_select(0, row)).clamp_min_(0.0)


def _drop_redundant(coreset: Coreset) -> Coreset:
    """Cut the picks made after the covering radius reached 0 (they repeat covered points)."""
    zero = torch.nonzero(coreset.radii == 0)
    if len(zero) == 0:
        return coreset
    keep = int(zero[0]) + 1
    return Coreset(coreset.indices[:keep], coreset.radii[:keep])
