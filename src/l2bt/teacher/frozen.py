"""The frozen teacher: a DINOv2 ViT that knows its variant and weights, and its loader
(official checkpoint, a path or URL, or random weights), checked with strict=True."""

from __future__ import annotations

from pathlib import Path

import torch

from l2bt.config import Precision, check_precision
from l2bt.errors import InputError
from l2bt.teacher import weights as weight_files
from l2bt.teacher.variants import ARCHITECTURES, PATCH_SIZE
from l2bt.teacher.vit import DinoVisionTransformer, init_random

COMPUTE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class Teacher(DinoVisionTransformer):
    """A frozen DINOv2 backbone that knows its variant and the identity of its weights."""

    def __init__(self, variant: str, weights_id: str = "random") -> None:
        super().__init__(ARCHITECTURES[variant])
        self.variant = variant
        self.weights_id = weights_id  # "random" or the checkpoint's SHA-256 prefix
        self.embed_dim = self.arch.embed_dim
        self.patch_size = PATCH_SIZE
        self.depth = self.arch.depth
        self.num_register_tokens = self.arch.num_register_tokens

    @torch.inference_mode()
    def features(
        self, x: torch.Tensor, layers: tuple[int, ...] = (7, 11), precision: Precision = "fp32"
    ) -> tuple[torch.Tensor, ...]:
        """Patch tokens after each block in `layers`, final LayerNorm applied, cls and
        register tokens dropped: one float32 (B, H/14, W/14, D) tensor per layer.

        `x` is (B, 3, H, W), ImageNet-normalised, H and W multiples of 14. `precision`
        "bf16" runs the blocks' matmuls and attention in bfloat16 from weights cast once
        (see `l2bt.teacher.vit`); the result is still float32.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"teacher input must be (B, 3, H, W), got {tuple(x.shape)}")
        if x.shape[2] % PATCH_SIZE or x.shape[3] % PATCH_SIZE:
            raise InputError(
                f"teacher input height and width must be multiples of "
                f"{PATCH_SIZE}, got {x.shape[2]} x {x.shape[3]}"
            )
        bad = [i for i in layers if not 0 <= i < self.depth]
        if bad or not layers:
            raise InputError(
                f"layers must be block indices in 0..{self.depth - 1} for "
                f"{self.variant}, got {tuple(layers)}"
            )
        dtype = COMPUTE_DTYPES[check_precision(precision)]
        return self.intermediate_patch_tokens(x, tuple(layers), dtype)


def load_teacher(
    variant: str = "dinov2_vitb14_reg",
    weights: str | Path | None = None,
) -> Teacher:
    """A frozen teacher in eval mode.

    `weights`: None for the official checkpoint (hub cache, checked), a path or URL to a
    `.pth`/`.safetensors` checkpoint, or "random" for a deterministic random teacher
    (tests and offline smoke runs only).
    """
    if variant not in ARCHITECTURES:
        raise InputError(f"unknown teacher {variant!r}; choose one of {', '.join(ARCHITECTURES)}")
    if str(weights) == "random":
        teacher = Teacher(variant, "random")
        init_random(teacher)
    else:
        path = weight_files.resolve(weights, variant)
        sha256 = weight_files.verified_sha256(path)
        teacher = Teacher(variant, sha256[:16])
        _load_checked(teacher, weight_files.read_state_dict(path), path)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def _load_checked(teacher: Teacher, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load with strict=True, after explaining any mismatch in one line."""
    expected = teacher.state_dict()
    cls_token = state.get("cls_token")
    if cls_token is not None and cls_token.shape[-1] != teacher.embed_dim:
        raise InputError(
            f"checkpoint is for embed dim {cls_token.shape[-1]}, "
            f"{teacher.variant} needs {teacher.embed_dim}",
            path,
        )
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(
                f"missing keys: {', '.join(missing[:4])}{' …' if len(missing) > 4 else ''}"
            )
        if unexpected:
            parts.append(
                f"unexpected keys: {', '.join(unexpected[:4])}{' …' if len(unexpected) > 4 else ''}"
            )
        raise InputError(f"not a {teacher.variant} checkpoint ({'; '.join(parts)})", path)
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise InputError(
                f"not a {teacher.variant} checkpoint ({key} has shape "
                f"{tuple(tensor.shape)}, expected {tuple(expected[key].shape)})",
                path,
            )
    teacher.load_state_dict(state, strict=True)
