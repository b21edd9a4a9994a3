"""Choosing the compute device, and naming it in results."""

from __future__ import annotations

import platform

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
