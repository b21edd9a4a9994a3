"""Training the two students on cached teacher features of defect-free images.

A step is either every patch of `batch_size` inputs (`ImageSteps`: the paper's recipe,
4 images per step, the default in pad mode, where every image has the same grid) or a
fixed number of patches drawn across all cached inputs (`PatchSteps`, `l2bt.patch_batches`:
the default in tiles and aspect modes). Tiles mode's inputs are windows of a few hundred
patches, so 4 of them make a step too small to keep a CPU's matrix units busy; aspect
mode's images have different grids, so its image steps differ in size. Patch steps are
sized for the hardware (`PATCH_BATCH`, measured by benchmarks/bench_training.py) and mix
every input into every step. Either
way an epoch sees every patch once, and the epoch's loss is the mean of its steps'
losses weighted by their share of the inputs (image steps) or patches (patch steps).

Precision "fp32" trains with autograd in float32. "bf16" runs each step's products in
bfloat16 on column batches (`l2bt.students.low_precision_step`: weights cast once per
step from float32 masters, float32 gradients, loss in float32) and steps a fused Adam;
the students are float32 modules either way, so what is saved is float32.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from l2bt.anomaly_map import patch_anomaly
from l2bt.config import Precision, TrainConfig
from l2bt.errors import InputError
from l2bt.features import TrainFeatures
from l2bt.patch_batches import PatchBatches
from l2bt.run import NormalScores, TrainingFacts
from l2bt.students import Student, as_columns, cosine_loss, low_precision_step
from l2bt.teacher import COMPUTE_DTYPES
from l2bt.utils.device import device_name
from l2bt.utils.progress import progress_bar, tell_estimate


@dataclass(frozen=True)
class TrainingHistory:
    """Mean loss per epoch (forward + backward student) and wall time."""

    epoch_losses: tuple[float, ...]
    seconds: float


def new_students(dim: int, seed: int) -> tuple[Student, Student]:
    """Forward and backward students, initialised reproducibly from `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Student(dim), Student(dim)


def train_students(
    features: TrainFeatures,
    config: TrainConfig,
    device: torch.device,
    precision: Precision = "fp32",
    patch_batch: int = 0,
) -> tuple[Student, Student, TrainingHistory]:
    """Fit forward (early → late) and backward (late → early) students with the cosine loss.

    Each step takes every patch of `batch_size` inputs when `patch_batch` is 0 (the
    paper's recipe), else `patch_batch` patches drawn across all inputs (see the module
    docstring); the loss is the sum of the two students' (1 − mean cosine) losses,
    minimised with Adam. A non-finite loss stops training with an `InputError` rather
    than writing a broken model. `precision` is "fp32" or "bf16" (module docstring).
    """
    dtype = COMPUTE_DTYPES[precision]
    forward, backward = new_students(features.dim, config.seed)
    forward.to(device).train()
    backward.to(device).train()
    optimizer = _adam([*forward.parameters(), *backward.parameters()], config.lr, dtype)
    steps = training_steps(features, config, patch_batch)
    order_rng = np.random.default_rng(config.seed)
    epoch_losses: list[float] = []
    start = time.perf_counter()
    with progress_bar(total=config.epochs * len(steps), desc="students", unit="step") as bar:
        for epoch in range(config.epochs):
            total = 0.0
            for step, (early, late, weight) in enumerate(steps.epoch(order_rng, device)):
                loss = _step(forward, backward, optimizer, early, late, dtype)
                _check_finite(loss, epoch, step)
                total += loss * weight
                if epoch == step == 0:
                    seconds = time.perf_counter() - start
                    tell_estimate("students", 1, config.epochs * len(steps), seconds)
                bar.update(1)
            epoch_losses.append(total)
            bar.set_postfix(epoch=epoch + 1, loss=f"{epoch_losses[-1]:.4f}")
    forward.eval()
    backward.eval()
    return forward, backward, TrainingHistory(tuple(epoch_losses), time.perf_counter() - start)


def _check_finite(loss: float, epoch: int, step: int) -> None:
    if not math.isfinite(loss):
        raise InputError(
            f"training diverged: loss is {loss} at epoch {epoch + 1}, step {step + 1} "
            "(try a lower --lr)"
        )


def _adam(params: list[torch.nn.Parameter], lr: float, dtype: torch.dtype) -> torch.optim.Adam:
    # fused: one kernel per step instead of ~10 passes per parameter (3x faster on a CPU)
    return torch.optim.Adam(params, lr=lr, fused=True if dtype != torch.float32 else None)


Step = tuple[torch.Tensor, torch.Tensor, float]  # early, late (N, D) float32; epoch weight


@dataclass(frozen=True)
class ImageSteps:
    """Steps of every patch of `batch_size` inputs, a fresh permutation per epoch; a step
    weighs its share of the inputs in the epoch's loss."""

    features: TrainFeatures
    batch_size: int

    def __len__(self) -> int:
        return math.ceil(len(self.features) / self.batch_size)

    def epoch(self, rng: np.random.Generator, device: torch.device) -> Iterator[Step]:
        n_inputs = len(self.features)
        order = rng.permutation(n_inputs)
        for start in range(0, n_inputs, self.batch_size):
            indices = order[start : start + self.batch_size]
            early, late = self.features.patches(indices, device)
            yield early, late, len(indices) / n_inputs


@dataclass(frozen=True)
class PatchSteps:
    """Steps of `PatchBatches` over all cached patches; a step weighs its share of them."""

    features: TrainFeatures
    batches: PatchBatches

    def __len__(self) -> int:
        return len(self.batches)

    def epoch(self, rng: np.random.Generator, device: torch.device) -> Iterator[Step]:
        for blocks in self.batches.epoch(rng):
            early, late = (
                torch.from_numpy(self.batches.gather(array, blocks)).to(device).float()
                for array in (self.features.early, self.features.late)
            )
            yield early, late, early.shape[0] / self.batches.n_rows


def training_steps(
    features: TrainFeatures, config: TrainConfig, patch_batch: int
) -> ImageSteps | PatchSteps:
    """Image steps when `patch_batch` is 0, else patch batches of that many patches."""
    if patch_batch == 0:
        return ImageSteps(features, config.batch_size)
    return PatchSteps(features, PatchBatches(features.n_patches, patch_batch))


def _step(
    forward: Student,
    backward: Student,
    optimizer: torch.optim.Optimizer,
    early: torch.Tensor,
    late: torch.Tensor,
    dtype: torch.dtype,
) -> float:
    """One optimiser step of both students on (N, D) patch rows; their summed loss (not
    stepped when it is not finite)."""
    optimizer.zero_grad(set_to_none=True)
    if dtype == torch.float32:
        loss = cosine_loss(forward(early), late) + cosine_loss(backward(late), early)
    else:
        loss = _low_precision_losses(forward, backward, early, late, dtype)
    if not torch.isfinite(loss):
        return float(loss.item())
    if dtype == torch.float32:
        loss.backward()
    optimizer.step()
    return float(loss.item())


def _low_precision_losses(
    forward: Student, backward: Student, early: torch.Tensor, late: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """Both students' summed loss on (N, D) patch rows, their gradients set in `dtype`."""
    early_columns, late_columns = as_columns(early), as_columns(late)  # (D, N) float32
    return low_precision_step(forward, early_columns.to(dtype), late_columns) + low_precision_step(
        backward, late_columns.to(dtype), early_columns
    )


@torch.inference_mode()
def normal_score_range(
    features: TrainFeatures,
    forward: Student,
    backward: Student,
    device: torch.device,
    precision: Precision = "fp32",
) -> NormalScores:
    """Median and maximum patch anomaly over the training images.

    Stored with the model to give overlays a fixed colour scale: values at the median of
    defect-free patches are blue, values beyond the most anomalous defect-free patch red.
    """
    values = torch.empty(features.n_patches)  # one float per training patch, filled in order
    offset = 0
    with torch.inference_mode():  # no autograd graph kept alive by the stored values
        for start in range(0, len(features), 8):
            indices = np.arange(start, min(start + 8, len(features)))
            early, late = features.patches(indices, device)
            scores = patch_anomaly(forward, backward, early, late, precision).cpu()  # (p,)
            values[offset : offset + scores.shape[0]] = scores
            offset += scores.shape[0]
    return NormalScores(median=float(values.median()), max=float(values.max()))


def describe_training(
    images: Sequence[Path], history: TrainingHistory, feature_seconds: float, device: torch.device
) -> TrainingFacts:
    """How the students were trained, for the run's record."""
    return TrainingFacts(
        n_images=len(images),
        first_image=str(images[0]),
        epoch_losses=history.epoch_losses,
        student_seconds=round(history.seconds, 3),
        feature_seconds=round(feature_seconds, 3),
        device=device_name(device),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        torch=torch.__version__,
        python=platform.python_version(),
    )


def plot_losses(losses: Sequence[float], path: Path) -> None:
    """A small loss-per-epoch figure in the run folder: easier to read than the JSON."""
    if not losses:
        return
    from l2bt.utils.figures import plt, save_figure

    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot(range(1, len(losses) + 1), losses, marker="o" if len(losses) < 30 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (forward + backward)")
    ax.set_title("student training")
    ax.grid(alpha=0.3)
    save_figure(fig, path)
