"""How Dinomaly's decoder learns: the official recipe's values, the loose cosine loss with
hard-point mining, the batches and the loop (StableAdamW and the warm-cosine schedule:
`dinomaly_optim.py`).

Written from the official code (guojiajeremy/Dinomaly, read at commit c5c76d0): the
per-class scripts' `train()` (dinomaly_mvtec_sep.py, dinomaly_visa_sep.py),
`global_cosine_hm_percent` and `WarmCosineScheduler` in utils.py, optimizers/StableAdamW.py,
and `ViTill.forward` in models/uad.py for the encoder taps. `DinomalyRecipe` lists each
value and where it comes from. Batches are the official loader's (each epoch a
permutation, incomplete batches dropped) but of one input shape each (`epoch_batches`),
so aspect mode loses no shape. The encoder runs under no_grad and keeps its 8 target
outputs; the decoder keeps its activations for the backward pass (about 210 floats per
token and channel for a step: benchmarks/README.md has the memory and FLOP counts).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch.nn import functional as F

from l2bt.config import TeacherConfig
from l2bt.errors import InputError
from l2bt.features import input_geometries, iter_inputs
from l2bt.methods.dinomaly_decoder import DinomalyDecoder, grouped_patches
from l2bt.methods.dinomaly_optim import StableAdamW, WarmCosineSchedule
from l2bt.preprocess import group_indices
from l2bt.teacher import COMPUTE_DTYPES, Teacher
from l2bt.utils.progress import progress_bar

Item = TypeVar("Item")


@dataclass(frozen=True)
class DinomalyRecipe:
    """The official training and scoring values.

    From the per-class scripts' `train()`: fusion groups [[0..3], [4..7]] for encoder and
    decoder; StableAdamW(lr 2e-3, betas (0.9, 0.999), weight_decay 1e-4, amsgrad, eps 1e-8;
    the multi-class *_uni scripts use eps 1e-10); WarmCosineScheduler(2e-3 -> 2e-4,
    warmup 100 iterations), stepped per iteration; p = min(0.9 · it / 1000, 0.9) with
    global_cosine_hm_percent(factor 0.1); clip_grad_norm(0.1). From utils.py's
    evaluation: get_gaussian_kernel(5, sigma 4), max_ratio 0.01 (the score: the mean of the
    top int(0.01 · pixels) values). Iterations (official 5,000; *_uni 10,000) and batch
    size (official 16) are `MethodSettings`' `dinomaly_iterations` and
    `dinomaly_batch_size`.
    """

    groups: tuple[tuple[int, ...], ...] = ((0, 1, 2, 3), (4, 5, 6, 7))
    lr: float = 2e-3
    final_lr: float = 2e-4
    warmup_iterations: int = 100
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-4
    eps: float = 1e-8
    amsgrad: bool = True
    max_grad_norm: float = 0.1
    hard_p_final: float = 0.9
    hard_p_ramp_iterations: int = 1000
    easy_factor: float = 0.1
    gaussian_size: int = 5
    gaussian_sigma: float = 4.0
    max_ratio: float = 0.01


def target_layers(depth: int) -> tuple[int, ...]:
    """The official target encoder blocks for a teacher of `depth` blocks."""
    if depth == 12:  # ViT-S, ViT-B
        return tuple(range(2, 10))
    if depth == 24:  # ViT-L
        return tuple(range(4, 19, 2))
    raise InputError(
        f"Dinomaly's official recipe has target layers for ViT-S/B/L (12 or 24 "
        f"blocks), not for a teacher of {depth} blocks"
    )


def encoder_layers(
    teacher: Teacher, x: torch.Tensor, layers: Sequence[int], precision: str = "fp32"
) -> list[torch.Tensor]:
    """Raw outputs (B, T, D) of the teacher's blocks `layers` (ascending), tokens
    [cls, registers, patches], no final LayerNorm (as ViTill); float32, no gradient.
    In bf16 the blocks are the teacher's cast-once copy (`Teacher.blocks_in`)."""
    blocks = teacher.blocks_in(COMPUTE_DTYPES[precision])
    kept = []
    with torch.no_grad():
        tokens = teacher.prepare_tokens(x)
        for index in range(max(layers) + 1):
            tokens = blocks[index](tokens)
            if index in layers:
                kept.append(tokens.float())
    return kept


class _ScaledGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by `scale` (broadcast)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
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


def hard_mining_cosine_loss(
    targets: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor], p: float, easy_factor: float
) -> torch.Tensor:
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


def epoch_batches(
    shapes: Sequence[tuple[int, int]], batch_size: int, rng: np.random.Generator
) -> Iterator[list[int]]:
    """Image indices, batch by batch, without end; `shapes` are the images' input shapes.

    Each epoch: a fresh permutation, cut into batches of `batch_size` images of one
    shape; the incomplete last batch of a shape is dropped when that shape filled at
    least one batch, and the batches come in random order. With one shape (pad mode)
    this is the official DataLoader(shuffle=True, drop_last=True), except that fewer
    images than `batch_size` make one batch of all of them rather than none; in aspect
    mode no shape goes unseen.
    """
    if not shapes or batch_size < 1:
        raise ValueError(f"need images and a batch size ≥ 1, got {len(shapes)} and {batch_size}")
    while True:
        order = rng.permutation(len(shapes))
        by_shape = group_indices([shapes[i] for i in order])  # positions in `order`
        batches = []
        for positions in by_shape.values():
            members = [int(order[p]) for p in positions]
            cut = [members[s : s + batch_size] for s in range(0, len(members), batch_size)]
            batches += [b for b in cut if len(b) == batch_size] or cut
        for k in rng.permutation(len(batches)):
            yield batches[k]


def prefetched(items: Iterator[Item]) -> Generator[Item, None, None]:
    """The items of `items`, each next one prepared in a background thread while the
    caller works on the current one (image decoding overlaps the training step)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(next, items)
        while True:
            item = pending.result()
            pending = pool.submit(next, items)
            yield item


def training_inputs(
    images: Sequence[Path], config: TeacherConfig, batch_size: int, seed: int
) -> Iterator[torch.Tensor]:
    """(B, 3, h, w) preprocessed training batches in `epoch_batches` order, forever."""
    geometries = input_geometries(images, config)
    shapes = [g.input_shape for g in geometries]
    for batch in epoch_batches(shapes, batch_size, np.random.default_rng(seed)):
        for _, x in iter_inputs(
            [images[i] for i in batch], [geometries[i] for i in batch], len(batch)
        ):
            yield x


@dataclass(frozen=True)
class TrainingLog:
    """Per iteration: the loss and the number of images in the batch."""

    losses: list[float]
    batch_sizes: list[int]


def train_decoder(
    decoder: DinomalyDecoder,
    teacher: Teacher,
    batches: Iterator[torch.Tensor],
    layers: Sequence[int],
    recipe: DinomalyRecipe,
    iterations: int,
    device: torch.device,
    precision: str,
) -> TrainingLog:
    """The official training loop on already initialised `decoder`: per iteration set the
    warm-cosine lr, encode a batch (no gradient), decode, take the hard-mining loss,
    clip the gradient norm and step StableAdamW."""
    optimizer = StableAdamW(
        decoder.parameters(),
        lr=recipe.lr,
        betas=recipe.betas,
        eps=recipe.eps,
        weight_decay=recipe.weight_decay,
        amsgrad=recipe.amsgrad,
    )
    schedule = WarmCosineSchedule(recipe.lr, recipe.final_lr, iterations, recipe.warmup_iterations)
    first_patch = 1 + teacher.num_register_tokens
    decoder.train()
    log = TrainingLog([], [])
    bar = progress_bar(total=iterations, desc="dinomaly", unit="it")
    with bar:
        for iteration, x in enumerate(islice(batches, iterations)):
            for group in optimizer.param_groups:
                group["lr"] = schedule.lr(iteration)
            x = x.to(device)
            grid = (x.shape[-2] // teacher.patch_size, x.shape[-1] // teacher.patch_size)
            encoded = encoder_layers(teacher, x, layers, precision)
            decoded = decoder(encoded)
            loss = hard_mining_cosine_loss(
                grouped_patches(encoded, recipe.groups, first_patch, grid),
                grouped_patches(decoded, recipe.groups, first_patch, grid),
                p=hard_mining_p(iteration, recipe.hard_p_final, recipe.hard_p_ramp_iterations),
                easy_factor=recipe.easy_factor,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(decoder.parameters(), recipe.max_grad_norm)
            optimizer.step()
            log.losses.append(loss.item())
            log.batch_sizes.append(x.shape[0])
            bar.update(1)
            bar.set_postfix(loss=f"{log.losses[-1]:.4f}")
    return log
