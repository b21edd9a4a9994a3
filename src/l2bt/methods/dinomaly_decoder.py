"""Dinomaly's trainable parts and how they learn: the noisy bottleneck, the linear-attention
decoder, the loose cosine loss with hard-point mining, StableAdamW and the warm-cosine
learning-rate schedule.

Each piece is written from the official code (guojiajeremy/Dinomaly): `bMlp`,
`LinearAttention2` and `Block` in models/vision_transformer.py, the fusion in models/uad.py
(`ViTill`), `global_cosine_hm_percent` and `WarmCosineScheduler` in utils.py, and
optimizers/StableAdamW.py. The values used, and their sources, are listed in dinomaly.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
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
        self.bottleneck = NoisyBottleneck(config.dim, int(config.dim * config.mlp_ratio),
                                          config.bottleneck_dropout)
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


def grouped_patches(layers: Sequence[torch.Tensor], groups: Sequence[Sequence[int]],
                    first_patch: int, grid: tuple[int, int]) -> list[torch.Tensor]:
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


# ---- loss --------------------------------------------------------------------------------------


class _ScaledGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by `scale` (broadcast)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (scale,) = ctx.saved_tensors
        return grad * scale, None


def hard_mining_p(iteration: int, final: float = 0.9, ramp_iterations: int = 1000) -> float:
    """The share of points counted easy at `iteration`: 0 at first, linearly up to `final`
    at `ramp_iterations`, then constant (official: min(0.9 · it / 1000, 0.9))."""
    return min(final * iteration / ramp_iterations, final)


def easy_point_threshold(distances: torch.Tensor, p: float) -> torch.Tensor:
    """The k-th largest of the point distances, k = int(n · (1 − p)) of n (at least 1):
    points strictly below it are easy (ties with it stay hard), as official."""
    k = max(1, int(distances.numel() * (1 - p)))
    return torch.topk(distances.flatten(), k).values[-1]


def hard_mining_cosine_loss(targets: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor],
                            p: float, easy_factor: float) -> torch.Tensor:
    """Official `global_cosine_hm_percent`: Dinomaly's loose loss with hard-point mining.

    `targets` (encoder) and `outputs` (decoder) are (B, h, w, D) per group. Per group, the
    loss is 1 − cosine between each image's whole flattened target and output (one vector
    per image: the decoder need not match every point, only the overall map), averaged
    over images, then over groups. Points (patches) whose own cosine distance is below
    the threshold of `easy_point_threshold` are easy: the gradient reaching their output
    features is multiplied by `easy_factor`. Targets get no gradient.
    """
    total = torch.zeros((), device=outputs[0].device)
    for target, output in zip(targets, outputs, strict=True):
        target = target.detach()
        with torch.no_grad():
            distances = 1 - F.cosine_similarity(target, output, dim=-1)  # (B, h, w)
            easy = distances < easy_point_threshold(distances, p)
            scale = torch.ones_like(distances).masked_fill(easy, easy_factor).unsqueeze(-1)
            # (B, h, w) -> (B, h, w, 1)
        output = _ScaledGradient.apply(output, scale)
        per_image = F.cosine_similarity(target.flatten(1), output.flatten(1), dim=1)  # (B,)
        total = total + (1 - per_image).mean()
    return total / len(targets)


# ---- optimisation ------------------------------------------------------------------------------


class StableAdamW(torch.optim.Optimizer):
    """Official optimizers/StableAdamW.py: AdamW (decoupled weight decay, optional AMSGrad)
    whose step for each parameter tensor is divided by max(1, RMS(g / denom) / clip), g the
    current gradient and denom the Adam denominator (update clipping, as in "Stable and
    low-precision training for large-scale vision-language models")."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float,
                 betas: tuple[float, float], eps: float, weight_decay: float, amsgrad: bool,
                 clip_threshold: float = 1.0) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                    "amsgrad": amsgrad, "clip_threshold": clip_threshold}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None) -> None:  # type: ignore[override]
        """One update of every parameter that has a gradient."""
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                param.mul_(1 - group["lr"] * group["weight_decay"])
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = torch.zeros_like(param)
                state["step"] += 1
                exp_avg, second_moment = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                second_moment.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                if group["amsgrad"]:
                    torch.maximum(state["max_exp_avg_sq"], second_moment,
                                  out=state["max_exp_avg_sq"])
                    second_moment = state["max_exp_avg_sq"]
                bias_correction1 = 1 - beta1 ** state["step"]
                bias_correction2 = 1 - beta2 ** state["step"]
                denom = second_moment.sqrt().div_(math.sqrt(bias_correction2)).add_(group["eps"])
                ratio = torch.div(grad, denom)  # one temporary, reused for the update below
                rms = ratio.norm() / math.sqrt(grad.numel())
                clipping = torch.clamp(rms / group["clip_threshold"], min=1.0)
                step_size = group["lr"] / bias_correction1 / clipping  # a 0-d tensor: no sync
                param.sub_(torch.div(exp_avg, denom, out=ratio).mul_(step_size))


@dataclass(frozen=True)
class WarmCosineSchedule:
    """Official `WarmCosineScheduler`, as a function of the iteration.

    Warm-up: `warmup` values evenly spaced from `start` to `base` inclusive (numpy
    linspace); then cosine from `base` down towards `final` over the remaining
    iterations; `final` from `total` on. With fewer iterations than the warm-up, training
    ends inside the warm-up, as the official schedule does.
    """

    base: float
    final: float
    total: int
    warmup: int
    start: float = 0.0

    def lr(self, iteration: int) -> float:
        if iteration >= self.total:
            return self.final
        if iteration < self.warmup:
            if self.warmup == 1:
                return self.start
            return self.start + (self.base - self.start) * iteration / (self.warmup - 1)
        progress = (iteration - self.warmup) / (self.total - self.warmup)
        return self.final + 0.5 * (self.base - self.final) * (1 + math.cos(math.pi * progress))
