"""Greedy k-center coreset selection (PatchCore's memory-bank subsampling), exact and fast.

k-center greedy adds, one at a time, the point farthest from those chosen so far.
`greedy_coreset_reference` does exactly that, one matrix–vector pass over the N × d points
per pick. `greedy_coreset` picks in certified runs: while the largest nearest distance
among the M farthest candidates exceeds every distance outside them, that candidate is
greedy's next pick, so a run of picks is made on the small candidate set and the N points
are updated once per run, as matrix products. The selection runs on exact 8-bit codes
(`quantize`): in d ≤ 256 dimensions every distance of such codes is an integer below 2²⁴,
exact in float32 in any summation order, so the runs pick exactly the reference's points,
ties included (lowest index). Bounds: (d + 2)·N floats and M² + rows_per_block × M
temporaries, never N × N; k·N·d multiply-adds in ⌈k/m⌉ passes. The certificate in full:
docs/design.md; rates: benchmarks/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from l2bt.methods.nearest import squared_norms
from l2bt.utils.progress import progress_bar


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


CODE_LEVEL = 127  # int8 codes in [−127, 127]: every distance exact in float32 (d ≤ 256)
CANDIDATES = 256  # M: points whose picks a run certifies
ROWS_PER_BLOCK = 4096  # rows of the N × m distance block in the nearest-distance update


def code_scale(largest_magnitude: float) -> float:
    """The scale of `quantize`'s codes for values of at most this magnitude."""
    return largest_magnitude / CODE_LEVEL if largest_magnitude > 0 else 1.0


def quantize(values: torch.Tensor, scale: float) -> torch.Tensor:
    """Values -> int8 codes round(values / scale), clamped to [−127, 127] (same shape)."""
    return torch.round(values / scale).clamp_(-CODE_LEVEL, CODE_LEVEL).to(torch.int8)


def greedy_coreset(
    points: torch.Tensor,
    size: int,
    seed: int = 0,
    candidates: int = CANDIDATES,
    rows_per_block: int = ROWS_PER_BLOCK,
) -> Coreset:
    """k-center greedy coreset of (N, d) `points` with at most `size` picks, in certified
    runs (module docstring): the reference's rule and first pick, far fewer passes.

    The first pick is drawn with a generator seeded by `seed`; every later pick is the
    point farthest from the picks so far, the lowest index on ties. Selection stops
    once every point is at distance 0 from a pick (duplicates). Integer `points` (int8
    codes) are widened to float32 a block at a time; float points compute in their dtype.
    """
    n = points.shape[0]
    size = max(1, min(size, n))
    generator = torch.Generator().manual_seed(seed)
    first = int(torch.randint(n, (1,), generator=generator))
    norms = _squared_norms(points, rows_per_block)  # (N,), in the compute dtype
    nearest = torch.full((n,), float("inf"), dtype=norms.dtype, device=points.device)
    _update_nearest(points, norms, [first], nearest, rows_per_block)
    nearest[first] = 0.0
    picks, radii = [first], []
    bar = progress_bar(total=size, desc="coreset", unit="pick", mininterval=1.0)
    with bar:
        bar.update(1)
        while len(picks) < size:
            run, values = _certified_run(
                points, norms, nearest, size - len(picks), min(candidates, n), rows_per_block
            )
            radii.extend(values)
            if not run:  # every point is covered
                break
            picks.extend(run)
            bar.update(len(run))
    if len(radii) < len(picks):
        radii.append(float(nearest.max()))  # the radius after the last pick
    return Coreset(
        torch.tensor(picks, dtype=torch.long),
        torch.tensor(radii, dtype=norms.dtype).clamp_min(0).sqrt(),
    )


def _compute(rows: torch.Tensor) -> torch.Tensor:
    """Rows in the dtype distances are computed in: float32 for integer codes."""
    return rows if rows.is_floating_point() else rows.float()


def _squared_norms(points: torch.Tensor, rows_per_block: int) -> torch.Tensor:
    """(N,) squared norms of the points, a block of rows at a time (no widened copy)."""
    return torch.cat(
        [
            squared_norms(_compute(points[start : start + rows_per_block]))
            for start in range(0, points.shape[0], rows_per_block)
        ]
    )


def _certified_run(
    points: torch.Tensor,
    norms: torch.Tensor,
    nearest: torch.Tensor,
    most: int,
    candidates: int,
    rows_per_block: int,
) -> tuple[list[int], list[float]]:
    """The next picks (at most `most`) and, for each, the covering radius² just before it
    (its nearest distance, the largest of all); `nearest` is updated for them.

    An empty run with one value 0 means every point is covered already.
    """
    top_values, top_indices = torch.topk(nearest, min(candidates + 1, nearest.shape[0]))
    outside = float(top_values[candidates]) if len(top_values) > candidates else -np.inf
    members = top_indices[:candidates].sort().values  # T in index order: argmax ties -> lowest
    values = nearest[members].cpu().numpy()  # (M,) T's current nearest distances
    if values.max() <= outside:  # tied with a point outside T: take the global argmax
        pick = int(nearest.argmax())
        radius = float(nearest[pick])
        if radius == 0:
            return [], [0.0]
        _update_nearest(points, norms, [pick], nearest, rows_per_block)
        nearest[pick] = 0.0
        return [pick], [radius]
    between = _squared_distances(_compute(points[members]), norms[members]).cpu().numpy()
    # (M, M) squared distances within T
    run: list[int] = []
    radii: list[float] = []
    while len(run) < most:
        best = int(values.argmax())
        if not values[best] > outside or values[best] == 0:
            break
        run.append(best)
        radii.append(float(values[best]))
        np.minimum(values, between[:, best], out=values)
        values[best] = 0.0  # a pick covers itself exactly
    if not run:  # only zeros left in T, and nothing outside above them
        return [], [0.0]
    chosen = members[run]
    _update_nearest(points, norms, chosen.tolist(), nearest, rows_per_block)
    nearest[members] = torch.from_numpy(values).to(nearest.device)
    return chosen.tolist(), radii


def _squared_distances(rows: torch.Tensor, rows_norms: torch.Tensor) -> torch.Tensor:
    """(M, d) rows -> (M, M) squared distances ‖a‖² + ‖b‖² − 2 a·b, clamped at 0."""
    partial = torch.addmm(rows_norms[None], rows, rows.T, alpha=-2.0)  # ‖b‖² − 2 a·b
    return partial.add_(rows_norms[:, None]).clamp_min_(0.0)


def _update_nearest(
    points: torch.Tensor,
    norms: torch.Tensor,
    picks: list[int],
    nearest: torch.Tensor,
    rows_per_block: int,
) -> None:
    """nearest ← min(nearest, squared distance to each of `picks`), in blocks of rows:
    (r, d) @ (d, m) products, so the points are read once for all m picks."""
    index = torch.tensor(picks, device=points.device)
    centres, centre_norms = _compute(points[index]), norms[index]  # (m, d), (m,)
    for start in range(0, points.shape[0], rows_per_block):
        rows = slice(start, start + rows_per_block)
        # (r, d) @ (d, m) -> (r, m): ‖c‖² − 2 x·c, the squared distance less ‖x‖²
        partial = torch.addmm(centre_norms[None], _compute(points[rows]), centres.T, alpha=-2.0)
        closest = partial.amin(dim=1).add_(norms[rows]).clamp_min_(0.0)  # (r,)
        torch.minimum(nearest[rows], closest, out=nearest[rows])


def greedy_coreset_reference(points: torch.Tensor, size: int, seed: int = 0) -> Coreset:
    """k-center greedy coreset of (N, d) `points`, one pick at a time: at most `size` picks.

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
    bar = progress_bar(total=size, desc="coreset", unit="pick", mininterval=1.0)
    with bar:
        for step in range(size):
            indices[step : step + 1] = pick
            _distances_to_row(points, norms, pick, out=buffer)
            torch.minimum(nearest, buffer, out=nearest)
            nearest.index_fill_(0, pick, 0.0)  # a pick covers itself exactly
            pick = nearest.argmax().unsqueeze(0)  # (1,), stays on the device
            radii[step : step + 1] = nearest[pick]
            if step % 1024 == 1023 or step == size - 1:
                bar.update(step + 1 - bar.n)
    radii = radii.clamp_min(0).sqrt()
    return _drop_redundant(Coreset(indices.cpu(), radii.cpu()))


def _distances_to_row(
    points: torch.Tensor, norms: torch.Tensor, row: torch.Tensor, out: torch.Tensor
) -> None:
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
