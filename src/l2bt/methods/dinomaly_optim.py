"""Dinomaly's optimiser and learning-rate schedule, written from the official code
(guojiajeremy/Dinomaly, c5c76d0: optimizers/StableAdamW.py and `WarmCosineScheduler` in
utils.py)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch


class StableAdamW(torch.optim.Optimizer):
    """Official optimizers/StableAdamW.py: AdamW (decoupled weight decay, optional AMSGrad)
    whose step for each parameter tensor is divided by max(1, RMS(g / denom) / clip), g the
    current gradient and denom the Adam denominator (update clipping, as in "Stable and
    low-precision training for large-scale vision-language models")."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float,
        betas: tuple[float, float],
        eps: float,
        weight_decay: float,
        amsgrad: bool,
        clip_threshold: float = 1.0,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "clip_threshold": clip_threshold,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
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
                    torch.maximum(
                        state["max_exp_avg_sq"], second_moment, out=state["max_exp_avg_sq"]
                    )
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
