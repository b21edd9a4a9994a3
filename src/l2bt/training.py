"""Training the two students on cached teacher features of defect-free images.

Precision "fp32" trains with autograd in float32. "bf16" runs each step's products in
bfloat16 on column batches (`l2bt.students.low_precision_step`: weights cast once per
step from float32 masters, float32 gradients, loss in float32) and steps a fused Adam;
the students are float32 modules either way, so what is saved is float32.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from l2bt.anomaly_map import patch_anomaly
from l2bt.config import Precision, TrainConfig
from l2bt.errors import InputError
from l2bt.features import TrainFeatures
from l2bt.run import NormalScores, TrainingFacts
from l2bt.students import Student, as_columns, cosine_loss, low_precision_step
from l2bt.teacher import COMPUTE_DTYPES
from l2bt.utils.device import device_name
from l2bt.utils.progress import progress_bar


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
) -> tuple[Student, Student, TrainingHistory]:
    """Fit forward (early → late) and backward (late → early) students with the cosine loss.

    Each step takes every patch of `batch_size` images; the loss is the sum of the two
    students' (1 − mean cosine) losses, minimised with Adam. A non-finite loss stops
    training with an `InputError` rather than writing a broken model. `precision` is the
    students' compute precision, "fp32" or "bf16" (see the module docstring).
    """
    dtype = COMPUTE_DTYPES[precision]
    forward, backward = new_students(features.dim, config.seed)
    forward.to(device).train()
    backward.to(device).train()
    params = [*forward.parameters(), *backward.parameters()]
    # fused: one kernel per step instead of ~10 passes per parameter (3x faster on a CPU)
    optimizer = torch.optim.Adam(
        params, lr=config.lr, fused=True if dtype != torch.float32 else None
    )
    order_rng = np.random.default_rng(config.seed)
    n_images = len(features)
    steps_per_epoch = math.ceil(n_images / config.batch_size)
    epoch_losses: list[float] = []
    start = time.perf_counter()
    bar = progress_bar(total=config.epochs * steps_per_epoch, desc="students", unit="step")
    with bar:
        for epoch in range(config.epochs):
            order = order_rng.permutation(n_images)
            total = 0.0
            for step in range(steps_per_epoch):
                indices = order[step * config.batch_size : (step + 1) * config.batch_size]
                early, late = features.patches(indices, device)
                loss = _step(forward, backward, optimizer, early, late, dtype)
                if not math.isfinite(loss):
                    raise InputError(
                        f"training diverged: loss is {loss} at epoch {epoch + 1}, "
                        f"step {step + 1} (try a lower --lr)"
                    )
                total += loss * len(indices)
                bar.update(1)
            epoch_losses.append(total / n_images)
            bar.set_postfix(epoch=epoch + 1, loss=f"{epoch_losses[-1]:.4f}")
    forward.eval()
    backward.eval()
    return forward, backward, TrainingHistory(tuple(epoch_losses), time.perf_counter() - start)


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
