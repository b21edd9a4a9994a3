"""anomalib's image models by the names its CLI gives them: what l2bt needs to run each.

A `ZooModel` row says which anomalib class a name makes, its default square input (and
the centre crop Dinomaly takes of it), its backbone, how it is made with random weights
(`pre_trained=False`, or timm's hard-coded download switched off) and which pretrained
file it needs otherwise, and the training schedule its authors ship (anomalib's reference
configs: one epoch for the memory-bank models, thousands of steps for the students). A
`Schedule` is what a zoo model is trained for: the authors' unless `--epochs` or
`--max-steps` says otherwise. Nothing here imports anomalib.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from l2bt.errors import InputError

# How a model gets random weights: its constructor's flag, timm's hard-coded download
# switched off while it is made, or (EfficientAD) its teacher's download skipped at fit.
RandomWeights = Literal["pre_trained", "timm", "skip_download"]


@dataclass(frozen=True)
class Schedule:
    """Training length: epochs and/or optimiser steps (None: no limit of that kind)."""

    max_epochs: int | None
    max_steps: int | None
    source: str  # "authors' default" or the flags that set it

    def trainer_arguments(self) -> dict[str, Any]:
        """Lightning Trainer arguments (-1: no step limit, as Lightning spells it)."""
        return {
            "max_epochs": -1 if self.max_epochs is None else self.max_epochs,
            "max_steps": -1 if self.max_steps is None else self.max_steps,
        }

    def words(self) -> str:
        parts = [_count(self.max_epochs, "epoch")] if self.max_epochs is not None else []
        parts += [_count(self.max_steps, "step")] if self.max_steps is not None else []
        return f"{' or '.join(parts) or 'no limit'} ({self.source})"


@dataclass(frozen=True)
class ZooModel:
    """One anomalib image model (see the module docstring)."""

    name: str  # anomalib's CLI name
    class_name: str  # in anomalib.models
    input_size: int  # the default square input
    crop: int | None  # the centre crop of the input the model sees (Dinomaly), else None
    backbone: str  # timm name of its pretrained backbone
    random_weights: RandomWeights
    epochs: int | None  # the authors' schedule
    steps: int | None
    needs_imagenet: bool = False  # EfficientAD's penalty images (ImageNette)
    batch_size: int = 32  # training images per step (anomalib's Folder default)
    min_size: int = 32  # the smallest input its network takes

    def schedule(self, epochs: int | None, max_steps: int | None) -> Schedule:
        """The authors' schedule, each kind of limit replaced where `--epochs` or
        `--max-steps` sets it (training stops at the first limit reached)."""
        if epochs is None and max_steps is None:
            return Schedule(self.epochs, self.steps, "authors' default")
        flags = [f"--epochs {epochs}"] if epochs is not None else []
        flags += [f"--max-steps {max_steps}"] if max_steps is not None else []
        kept = [] if epochs is not None and max_steps is not None else ["authors' other limit"]
        return Schedule(
            self.epochs if epochs is None else epochs,
            self.steps if max_steps is None else max_steps,
            ", ".join(flags + kept),
        )

    def crop_at(self, size: int) -> int | None:
        """The crop for an input of `size` px: the default crop scaled, a multiple of 14."""
        if self.crop is None:
            return None
        return max(14, round(size * self.crop / self.input_size / 14) * 14)


ZOO_MODELS: dict[str, ZooModel] = {
    m.name: m
    for m in (
        ZooModel("padim", "Padim", 256, None, "resnet18", "pre_trained", 1, None),
        ZooModel("patchcore", "Patchcore", 256, None, "wide_resnet50_2", "pre_trained", 1, None),
        ZooModel(
            "efficient_ad",
            "EfficientAd",
            256,
            None,
            "pretrained_teacher_s.pth (PDN distilled from wide_resnet101_2)",
            "skip_download",
            None,
            70_000,
            needs_imagenet=True,
            batch_size=1,  # as EfficientAD requires
            min_size=256,  # its autoencoder's 8 × 8 bottleneck kernel
        ),
        ZooModel(
            "reverse_distillation",
            "ReverseDistillation",
            256,
            None,
            "wide_resnet50_2",
            "pre_trained",
            200,
            None,
        ),
        ZooModel("fastflow", "Fastflow", 256, None, "resnet18", "pre_trained", 500, None),
        ZooModel("stfpm", "Stfpm", 256, None, "resnet18", "timm", 100, None),
        ZooModel(
            "supersimplenet",
            "Supersimplenet",
            256,
            None,
            "wide_resnet50_2.tv_in1k",
            "timm",
            300,
            None,
        ),
        ZooModel(
            "dinomaly",
            "Dinomaly",
            448,
            392,
            "vit_base_patch14_reg4_dinov2",
            "timm",
            None,
            5_000,
            batch_size=8,
        ),
    )
}


def zoo_model(name: str) -> ZooModel:
    """The row of `name`; an unknown name is one line listing the known ones."""
    if name not in ZOO_MODELS:
        raise InputError(
            f"unknown anomalib model {name!r}; available: {', '.join(sorted(ZOO_MODELS))}"
        )
    return ZOO_MODELS[name]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
