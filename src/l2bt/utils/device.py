"""Choosing the compute device, naming it in results, and bringing results back.

`to_host` copies a GPU's maps and features through page-locked memory: a copy straight into
ordinary (pageable) memory goes through the driver's staging at a fraction of the bus's
speed (figures in benchmarks/README.md, "The GPU path").
"""

from __future__ import annotations

import platform

import numpy as np
import torch

from l2bt.errors import InputError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA when available; 'cuda' without a GPU is an input error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for, but no CUDA device is available")
    return device


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's kind and torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def to_host(values: torch.Tensor, out: np.ndarray | None = None) -> np.ndarray:
    """A tensor as a numpy array of its dtype, written into `out` (same shape and dtype)
    when given. A CPU tensor without `out` is returned as a view, not copied."""
    if values.device.type == "cuda":
        staging = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
        host = staging.copy_(values).numpy()  # pinned: cached, reused, so copy out of it
        if out is None:
            return host.copy()
    else:
        host = values.cpu().numpy()
        if out is None:
            return host
    out[...] = host
    return out
