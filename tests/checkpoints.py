"""Teacher checkpoints, position embeddings, students files and a relative error, shared by
tests (never a test file itself; kept out of helpers.py so that conftest imports no torch)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from l2bt.students import Student
from l2bt.teacher import load_teacher


def small_checkpoint(path, seed=0):
    teacher = load_teacher("dinov2_vits14", weights="random")
    generator = torch.Generator().manual_seed(seed)
    state = {
        k: v + 0.01 * torch.randn(v.shape, generator=generator)
        for k, v in teacher.state_dict().items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def reference_pos_embed(pos_embed, grid_h, grid_w, registers):
    """The official interpolation, restated: bicubic from 37x37; plain variants by a scale
    factor with a 0.1 offset, registered ones to a size with antialiasing."""
    dim = pos_embed.shape[-1]
    grid = pos_embed[:, 1:].reshape(1, 37, 37, dim).permute(0, 3, 1, 2)
    if registers:
        grid = F.interpolate(grid, size=(grid_h, grid_w), mode="bicubic", antialias=True)
    else:
        grid = F.interpolate(
            grid,
            scale_factor=((grid_h + 0.1) / 37, (grid_w + 0.1) / 37),
            mode="bicubic",
            antialias=False,
        )
    grid = grid.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
    return torch.cat([pos_embed[:, :1], grid], dim=1)


def old_students_file(path: Path, dim: int = 384, seed: int = 0) -> None:
    """A students file as l2bt 0.1.0 wrote it: both students' tensors, no metadata."""
    torch.manual_seed(seed)
    tensors = {}
    for prefix in ("forward.", "backward."):
        tensors |= {prefix + k: v for k, v in Student(dim).state_dict().items()}
    save_file(tensors, str(path))


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())
