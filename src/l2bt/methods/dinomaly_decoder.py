"""Dinomaly's trainable parts and how they learn: the noisy bottleneck, the linear-attention
decoder, the loose cosine loss with hard-point mining, StableAdamW and the warm-cosine
learning-rate schedule.

Each piece is written from the official code (guojiajeremy/Dinomaly): `bMlp`,
`LinearAttention2` and `Block` in models/vision_transformer.py, the fusion in models/uad.py
(`ViTill`), `global_cosine_hm_percent` and `WarmCosineScheduler` in utils.py, and
optimizers/StableAdamW.py. The values used, and their sources, are listed in dinomaly.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from l2bt.teacher.vit import Mlp

# ---- model -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecoderConfig:
    """Shape of the bottleneck and decoder (official values as defaults)."""

    dim: int  # the encoder's embedding dimension
    num_heads: int  # the encoder's number of heads
    depth: int = 8  # decoder blocks
    mlp_ratio: float = 4.0  # hidden width of the bottleneck and of each block's MLP, × dim
    bottleneck_dropout: float = 0.2  # the "noisy bottleneck"
    layer_norm_eps: float = 1e-8


class NoisyBottleneck(nn.Module):
    """Official `bMlp`: dropout → fc1 → GELU → dropout → fc2 → dropout, on (B, T, D).

    The dropouts are Dinomaly's only noise: they perturb the fused encoder features during
    training, so the decoder learns to restore normal features instead of copying its input,
    and fails to restore anomalous ones.
    """

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.drop(self.act(self.fc1(self.drop(x))))
        return self.drop(self.fc2(hidden))


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """φ(x) = elu(x) + 1: positive, so every token gets a positive weight."""
    return F.elu(x) + 1.0


class LinearAttention(nn.Module):
    """Official `LinearAttention2`: softmax attention replaced by a kernel feature map.

    Per head, token s gets Σ_t φ(q_s)·φ(k_t) v_t / Σ_t φ(q_s)·φ(k_t), computed as
    φ(q_s)ᵀ(Σ_t φ(k_t) v_tᵀ) / φ(q_s)·Σ_t φ(k_t): O(T·D·d) instead of O(T²·D). Unlike
    softmax it cannot concentrate on one token, so the decoder cannot copy an anomalous
    patch from its input to its output (the paper's "linear attention that cannot focus").
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)  # qkv_bias=True, as official
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, T, 3, H, d) -> 3 × (B, H, T, d)
        q, k = elu_feature_map(q), elu_feature_map(k)
        kv = torch.einsum("bhtd,bhte->bhde", k, v)  # Σ_t φ(k_t) v_tᵀ: (B, H, d, d)
        normaliser = 1.0 / torch.einsum("bhtd,bhd->bht", q, k.sum(dim=2))  # (B, H, T)
        out = torch.einsum("bhde,bhtd,bht->bhte", kv, q, normaliser)  # (B, H, T, d)
        out = out.transpose(1, 2).reshape(batch, tokens, dim)  # (B, H, T, d) -> (B, T, D)
        return self.proj(out)


class DecoderBlock(nn.Module):
    """Official `Block` with `attn=LinearAttention2`: pre-norm, no LayerScale, and no
    dropout or drop path (the official decoder passes 0 for all three rates)."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        dim = config.dim
        self.norm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.attn = LinearAttention(dim, config.num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp = Mlp(dim, int(dim * config.mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def fuse(layers: Sequence[torch.Tensor]) -> torch.Tensor:
    """The mean of same-shaped layers (official `fuse_feature`)."""
    return torch.stack(list(layers), dim=1).mean(dim=1)  # n × (B, T, D) -> (B, T, D)


class DinomalyDecoder(nn.Module):
    """Noisy bottleneck + linear-attention blocks: restores the encoder's target layers."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.bottleneck = NoisyBottleneck(
            config.dim, int(config.dim * config.mlp_ratio), config.bottleneck_dropout
        )
        self.blocks = nn.ModuleList(DecoderBlock(config) for _ in range(config.depth))

    def forward(self, encoder_layers: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """(B, T, D) outputs of the target encoder blocks, shallowest first -> the (B, T, D)
        outputs of the decoder blocks, deepest first, so that index i of both lists is
        compared (the official ViTill's reversed `de_list`).

        The bottleneck sees the mean of all target layers, every token included (the
        official `remove_class_token=False`: class and register tokens go through the
        decoder and are dropped only after fusion, in `grouped_patches`).
        """
        x = self.bottleneck(fuse(encoder_layers))
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        return outputs[::-1]


def grouped_patches(
    layers: Sequence[torch.Tensor],
    groups: Sequence[Sequence[int]],
    first_patch: int,
    grid: tuple[int, int],
) -> list[torch.Tensor]:
    """The official loose fusion: per group, the mean of its layers' tokens, with the
    class and register tokens (the first `first_patch`) dropped: (B, h, w, D) per group."""
    fused = []
    for group in groups:
        tokens = fuse([layers[i] for i in group])[:, first_patch:]  # (B, h·w, D)
        fused.append(tokens.reshape(tokens.shape[0], *grid, -1))  # -> (B, h, w, D)
    return fused


def init_official(module: nn.Module) -> None:
    """The official initialisation of the trainable parts, from the global RNG: linear
    weights truncated normal (std 0.01, cut at ±0.03), biases 0, LayerNorm weights 1."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.01, a=-0.03, b=0.03)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
