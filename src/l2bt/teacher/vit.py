"""The DINOv2 vision transformer, written to match the official release parameter for parameter.

Module and parameter names mirror facebookresearch/dinov2 (`patch_embed.proj`,
`cls_token`, `pos_embed`, `register_tokens`, `mask_token`, `blocks.N.{norm1, attn.qkv,
attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2 | mlp.w12, mlp.w3, ls2.gamma}`, `norm`),
so official checkpoints load with `strict=True` and give the same features.

Low precision. `intermediate_patch_tokens(x, layers, dtype=torch.bfloat16)` runs the
blocks from a copy whose Linear weights are cast to bfloat16 once (kept until the fp32
weights change or move) instead of autocast's cast of every weight on every call. The
residual stream, LayerNorms and LayerScales stay in float32 (each block adds its bf16
branch output to the fp32 stream), as under autocast; the patch embedding (0.2 % of the
FLOPs) stays float32 too. Matmuls and attention (`scaled_dot_product_attention`, whose
kernels accumulate softmax and products in float32) run in bf16; the returned tokens
are float32. Cost of one block on N tokens of width D (MLP hidden 4D): 24·N·D² + 4·N²·D
FLOPs; its 12·D² weights are read as 24·D² bytes per call, where autocast reads 48·D²
(fp32), writes 24·D² (the cast) and reads those again. float32 is the default and is
computed exactly as before: the only added operation, `x.to(weight.dtype)`, is then a
no-op.
"""

from __future__ import annotations

from collections.abc import Hashable

import torch
from torch import nn
from torch.nn import functional as F

from l2bt.teacher.variants import PATCH_SIZE, TRAINED_GRID, ViTArch


class PatchEmbed(nn.Module):
    """Non-overlapping 14×14 patches projected to the embedding: (B, 3, H, W) -> (B, h·w, D)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=PATCH_SIZE, stride=PATCH_SIZE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, h·w, D)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        x = x.to(self.qkv.weight.dtype)  # a low-precision copy's input; a no-op in float32
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, N, 3, H, d) -> 3 × (B, H, N, d)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(batch, tokens, dim)  # (B, H, N, d) -> (B, N, D)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.fc1.weight.dtype)  # a low-precision copy's input; a no-op in float32
        return self.fc2(self.act(self.fc1(x)))


class SwiGLU(nn.Module):
    """ViT-g's feed-forward: SiLU(x W1) ⊙ (x W2), W1 and W2 packed in `w12`."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8  # the official rounding to a multiple of 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.w12.weight.dtype)  # a low-precision copy's input; a no-op in float32
        gate, value = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale on both residual branches."""

    def __init__(self, arch: ViTArch) -> None:
        super().__init__()
        dim = arch.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, arch.num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = (SwiGLU if arch.ffn == "swiglu" else Mlp)(dim, 4 * dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    """A DINOv2 backbone; `intermediate_patch_tokens` is what the rest of l2bt uses."""

    def __init__(self, arch: ViTArch) -> None:
        super().__init__()
        dim = arch.embed_dim
        self.arch = arch
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, TRAINED_GRID**2 + 1, dim))
        if arch.num_register_tokens:
            self.register_tokens = nn.Parameter(torch.zeros(1, arch.num_register_tokens, dim))
        self.blocks = nn.ModuleList(Block(arch) for _ in range(arch.depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # unused here; in every checkpoint
        # (key of the weights it was cast from, the copy); a plain attribute, so it is
        # neither in the state dict nor moved by .to()
        self._low_precision: tuple[Hashable, nn.ModuleList] | None = None

    def blocks_in(self, dtype: torch.dtype) -> nn.ModuleList:
        """The blocks computing in `dtype`: `self.blocks` for float32, otherwise a copy with
        Linear weights in `dtype`, cast on first use and reused while the weights are the same."""
        if dtype == torch.float32:
            return self.blocks
        key = (dtype, _weights_key(self.blocks))
        if self._low_precision is None or self._low_precision[0] != key:
            self._low_precision = None  # free the stale copy before casting a new one
            self._low_precision = (key, _cast_linear_weights(self.blocks, self.arch, dtype))
        return self._low_precision[1]

    def interpolate_pos_encoding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """Position embeddings for a grid_h × grid_w patch grid: (1, 1 + h·w, D).

        As the official code: bicubic from the trained 37×37 grid; the plain variants
        pass a scale factor (h + 0.1) / 37 (a historical offset that also changes the
        sampling positions), the registered ones an output size with antialiasing.
        """
        pos_embed = self.pos_embed
        if grid_h == grid_w == TRAINED_GRID:
            return pos_embed
        dim = pos_embed.shape[-1]
        cls_pos, patch_pos = pos_embed[:, :1].float(), pos_embed[:, 1:].float()
        patch_pos = patch_pos.reshape(1, TRAINED_GRID, TRAINED_GRID, dim).permute(0, 3, 1, 2)
        # (1, 37·37, D) -> (1, D, 37, 37)
        antialias = self.arch.interpolate_antialias
        if self.arch.interpolate_offset:
            offset = self.arch.interpolate_offset
            scale = ((grid_h + offset) / TRAINED_GRID, (grid_w + offset) / TRAINED_GRID)
            patch_pos = F.interpolate(
                patch_pos, scale_factor=scale, mode="bicubic", antialias=antialias
            )
        else:
            patch_pos = F.interpolate(
                patch_pos, size=(grid_h, grid_w), mode="bicubic", antialias=antialias
            )
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
        # (1, D, h, w) -> (1, h·w, D)
        return torch.cat((cls_pos, patch_pos), dim=1).to(pos_embed.dtype)

    def prepare_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1 + registers + h·w, D): [cls, registers, patches]."""
        batch, _, height, width = x.shape
        tokens = self.patch_embed(x)
        tokens = torch.cat((self.cls_token.expand(batch, -1, -1), tokens), dim=1)
        pos = self.interpolate_pos_encoding(height // PATCH_SIZE, width // PATCH_SIZE)
        tokens = tokens + pos.to(tokens.dtype)
        if self.arch.num_register_tokens:
            registers = self.register_tokens.expand(batch, -1, -1)
            tokens = torch.cat((tokens[:, :1], registers, tokens[:, 1:]), dim=1)
        return tokens

    def intermediate_patch_tokens(
        self, x: torch.Tensor, layers: tuple[int, ...], dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, ...]:
        """Normalised float32 patch tokens after each 0-based block in `layers`: (B, h, w, D) each.

        Equal to the official `get_intermediate_layers(x, layers, norm=True)` reshaped;
        only the blocks up to the deepest requested one run. `dtype` is the blocks'
        compute precision (see the module docstring).
        """
        batch, _, height, width = x.shape
        grid_h, grid_w = height // PATCH_SIZE, width // PATCH_SIZE
        first_patch = 1 + self.arch.num_register_tokens
        blocks = self.blocks_in(dtype)
        tokens = self.prepare_tokens(x)
        kept: dict[int, torch.Tensor] = {}
        for index in range(max(layers) + 1):
            tokens = blocks[index](tokens)
            if index in layers:
                patches = self.norm(tokens)[:, first_patch:]
                # (B, h·w, D) -> (B, h, w, D)
                kept[index] = patches.reshape(batch, grid_h, grid_w, -1)
        return tuple(kept[i] for i in layers)


def _weights_key(blocks: nn.ModuleList) -> Hashable:
    """Identifies the blocks' current weights: storage, device and in-place version of each
    (a load_state_dict or an in-place edit bumps the version; .to() makes new storage).
    Tensors made under inference mode have no version counter and count as version 0."""
    return tuple(
        (p.device, p.data_ptr(), 0 if p.is_inference() else p._version) for p in blocks.parameters()
    )


def _cast_linear_weights(blocks: nn.ModuleList, arch: ViTArch, dtype: torch.dtype) -> nn.ModuleList:
    """A frozen copy of `blocks` with every Linear's weight and bias in `dtype`; LayerNorm
    and LayerScale parameters stay float32. Built empty, then filled by one cast per tensor
    (no float32 duplicate of the weights is ever made)."""
    with torch.device("meta"):
        copy = nn.ModuleList(Block(arch) for _ in blocks)
    for module in copy.modules():
        if isinstance(module, nn.Linear):
            module.to(dtype)
    copy.to_empty(device=next(blocks.parameters()).device)
    copy.load_state_dict(blocks.state_dict())  # copy_ casts into each target's dtype
    return copy.requires_grad_(False).eval()


def init_random(model: DinoVisionTransformer, seed: int = 0) -> None:
    """A deterministic DINOv2-like initialisation (independent of the global RNG)."""
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        with torch.no_grad():
            if name.endswith("gamma") or (name.endswith("weight") and param.ndim == 1):
                param.fill_(1.0)  # LayerScale (init_values=1.0) and LayerNorm weights
            elif name.endswith("bias"):
                param.zero_()
            elif name in ("cls_token", "register_tokens", "mask_token"):
                param.normal_(0.0, 1e-6, generator=generator)
            else:
                param.copy_(_trunc_normal(param.shape, 0.02, generator))


def _trunc_normal(shape: torch.Size, std: float, generator: torch.Generator) -> torch.Tensor:
    values = torch.randn(shape, generator=generator) * std
    return values.clamp_(-2 * std, 2 * std)
