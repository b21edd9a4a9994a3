"""The students: shallow MLPs that learn to map one teacher layer's patch features to another's."""

from __future__ import annotations

import torch
from torch import nn


class Student(nn.Module):
    """Linear(D, D) → GELU → Linear(D, D) → GELU → Linear(D, D), per patch: (…, D) -> (…, D)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(dim, dim), nn.GELU(),
            nn.Linear(dim, dim), nn.GELU(),
            nn.Linear(dim, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def cosine_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − mean cosine similarity over all patches: the paper's per-student loss."""
    return 1.0 - nn.functional.cosine_similarity(prediction, target, dim=-1).mean()
