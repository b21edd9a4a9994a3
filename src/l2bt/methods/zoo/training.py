"""Making and training an anomalib model on exactly the images l2bt gives it.

`build` makes the model's Lightning module: its own pre-processor at the requested input
size, no post-processor (anomalib's min-max normalisation and thresholds off: raw maps
and scores), no evaluator or visualiser, the weights of `weights.py`, and the `Schedule`
as its trainer arguments (a subclass overrides `trainer_arguments`, which anomalib's
Engine lets win over its own). `train` stages the training images as symlinks (with
`+tiles`, each image's T × T windows as PNG files) in one folder that anomalib's `Folder`
datamodule reads as the training set and, for the models that fit statistics on
validation images (EfficientAD's map quantiles), also as the validation set: no test or
calibration image is ever seen. `state` / `load_state` move the torch model's tensors in
and out (buffers an unfitted model holds empty, e.g. PatchCore's memory bank, resized).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from l2bt.config import TileSettings
from l2bt.data.image_io import read_image
from l2bt.methods.zoo.models import Schedule, ZooModel
from l2bt.methods.zoo.weights import constructor_arguments, timm_random
from l2bt.tiling import TileLayout, cut_windows

STAGING = "staging"  # the training folder anomalib reads, under the work folder
SEED = 0


@dataclass(frozen=True)
class TrainingRun:
    """What the Engine ran: epochs and optimiser steps, and its seconds."""

    epochs: int
    steps: int


def build(model: ZooModel, size: int, schedule: Schedule, random: bool, imagenet: str) -> Any:
    """The anomalib Lightning module of `model` for `size` px inputs (see the docstring)."""
    from anomalib import models

    torch.manual_seed(SEED)  # random backbones and PaDiM's feature choice are drawn here
    base = getattr(models, model.class_name)
    arguments = schedule.trainer_arguments()
    own_arguments = base.trainer_arguments.fget
    namespace: dict[str, Any] = {
        "trainer_arguments": property(lambda self: {**own_arguments(self), **arguments})
    }
    if random and model.random_weights == "skip_download":
        namespace["prepare_pretrained_model"] = lambda self: None  # keep the random teacher
    scheduled = type(base.__name__, (base,), namespace)
    crop = model.crop_at(size)
    pre = (
        base.configure_pre_processor((size, size))
        if crop is None
        else base.configure_pre_processor((size, size), crop)
    )
    extra = {"imagenet_dir": imagenet} if model.needs_imagenet else {}
    with timm_random(model, random):
        return scheduled(
            pre_processor=pre,
            post_processor=False,
            evaluator=False,
            visualizer=False,
            **constructor_arguments(model, random),
            **extra,
        )


def stage(images: Sequence[Path], folder: Path, tiles: TileSettings | None) -> int:
    """The training images in `folder` (symlinks, or their windows as PNGs); how many."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    count = 0
    for index, path in enumerate(images):
        if tiles is None:
            (folder / f"{index:06d}{path.suffix.lower()}").symlink_to(Path(path).resolve())
            count += 1
            continue
        image = read_image(path)
        height, width = image.shape[:2]
        layout = TileLayout.for_image(height, width, tiles)
        for window, pixels in enumerate(cut_windows(image, layout)):
            Image.fromarray(pixels).save(folder / f"{index:06d}_{window:03d}.png", compress_level=1)
            count += 1
    return count


def train(module: Any, model: ZooModel, folder: Path, root: Path, accelerator: str) -> TrainingRun:
    """Fit `module` through anomalib's Engine on the images staged in `folder`."""
    from anomalib.data import Folder
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything

    seed_everything(SEED, verbose=False)
    datamodule = Folder(
        name="l2bt",
        normal_dir=folder,
        normal_test_dir=folder,  # the validation images: the training images again
        test_split_mode="from_dir",
        val_split_mode="same_as_test",
        train_batch_size=model.batch_size,
        eval_batch_size=model.batch_size,
        num_workers=0,
        seed=SEED,
    )
    engine = Engine(default_root_dir=root, barebones=True, accelerator=accelerator, devices=1)
    engine.fit(model=module, datamodule=datamodule)
    return TrainingRun(int(engine.trainer.current_epoch), int(engine.trainer.global_step))


def state(module: Any) -> dict[str, torch.Tensor]:
    """The torch model's tensors, each its own copy (safetensors refuses shared storage)."""
    return {k: v.detach().cpu().clone().contiguous() for k, v in module.model.state_dict().items()}


def load_state(module: Any, tensors: dict[str, torch.Tensor]) -> None:
    """Tensors from `state` into a freshly built module (empty buffers resized first)."""
    network: nn.Module = module.model
    for key, value in tensors.items():
        owner_name, _, leaf = key.rpartition(".")
        owner = network.get_submodule(owner_name) if owner_name else network
        if isinstance(owner, nn.ParameterDict):
            owner[leaf] = nn.Parameter(value.clone(), requires_grad=False)
        elif leaf in owner._buffers:
            owner._buffers[leaf] = value.clone()
    network.load_state_dict(tensors, strict=True)


def as_input(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1], as anomalib reads an image file."""
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255.0  # a copy
