"""The frozen teacher: a DINOv2 vision transformer and where its weights come from.

teacher = load_teacher("dinov2_vitb14_reg")            # official weights, hub cache
teacher = load_teacher("dinov2_vits14", weights="random")
early, late = teacher.features(x, layers=(7, 11))     # (B, H/14, W/14, D) each

The variants (`l2bt.teacher.variants`) are plain data; the model and its loader import
torch, so they are imported when first used (`l2bt --help` and argument checks stay
free of torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from l2bt.teacher.variants import ARCHITECTURES, PATCH_SIZE, TEACHER_VARIANTS

if TYPE_CHECKING:
    from l2bt.teacher.frozen import COMPUTE_DTYPES, Teacher, load_teacher

_FROM_FROZEN = ("COMPUTE_DTYPES", "Teacher", "load_teacher")

__all__ = [
    "ARCHITECTURES",
    "COMPUTE_DTYPES",
    "PATCH_SIZE",
    "TEACHER_VARIANTS",
    "Teacher",
    "load_teacher",
]


def __getattr__(name: str) -> Any:
    if name in _FROM_FROZEN:
        return getattr(importlib.import_module("l2bt.teacher.frozen"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
