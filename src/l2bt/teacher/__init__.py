"""The frozen teacher: a DINOv2 vision transformer and where its weights come from.

teacher = load_teacher("dinov2_vitb14_reg")            # official weights, hub cache
teacher = load_teacher("dinov2_vits14", weights="random")
early, late = teacher.features(x, layers=(7, 11))     # (B, H/14, W/14, D) each
"""

from l2bt.teacher.frozen import (
    COMPUTE_DTYPES,
    PRECISIONS,
    TEACHER_VARIANTS,
    Teacher,
    load_teacher,
)

__all__ = ["COMPUTE_DTYPES", "PRECISIONS", "TEACHER_VARIANTS", "Teacher", "load_teacher"]
