"""The DINOv2 variants: their shapes and quirks, as plain data (no torch), so that settings
can be checked before torch is imported."""

from __future__ import annotations

from dataclasses import dataclass

PATCH_SIZE = 14
TRAINED_GRID = 37  # official checkpoints: 518 px images, 37 x 37 position embeddings


@dataclass(frozen=True)
class ViTArch:
    """Shape and quirks of one DINOv2 variant."""

    embed_dim: int
    depth: int
    num_heads: int
    ffn: str  # "mlp" or "swiglu"
    num_register_tokens: int
    interpolate_antialias: bool
    interpolate_offset: float


def _arch(embed_dim: int, depth: int, heads: int, ffn: str, registers: bool) -> ViTArch:
    # Registered variants were trained with antialiased interpolation and no offset.
    return ViTArch(
        embed_dim,
        depth,
        heads,
        ffn,
        4 if registers else 0,
        interpolate_antialias=registers,
        interpolate_offset=0.0 if registers else 0.1,
    )


_BASES = {
    "dinov2_vits14": (384, 12, 6, "mlp"),
    "dinov2_vitb14": (768, 12, 12, "mlp"),
    "dinov2_vitl14": (1024, 24, 16, "mlp"),
    "dinov2_vitg14": (1536, 40, 24, "swiglu"),
}
ARCHITECTURES: dict[str, ViTArch] = {
    name + suffix: _arch(*spec, registers=bool(suffix))
    for name, spec in _BASES.items()
    for suffix in ("", "_reg")
}

TEACHER_VARIANTS = tuple(ARCHITECTURES)
