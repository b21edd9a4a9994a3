"""training.py: the overlay colour scale stored at fit time (median and maximum patch
anomaly over every training patch, streamed in groups of inputs); bf16 training decreases
the loss like fp32."""

import numpy as np
import torch

from l2bt.anomaly_map import patch_anomaly
from l2bt.config import TrainConfig
from l2bt.features import TrainFeatures
from l2bt.run import NormalScores
from l2bt.training import new_students, normal_score_range, train_students


def test_normal_score_range_is_the_plain_median_and_max_over_every_patch(tmp_path):
    """11 inputs of uneven grids (more than one group of 8, an even patch count, so the
    median is torch's lower middle value) against one plain batch of all patches."""
    rng = np.random.default_rng(0)
    shapes = [
        (1, 3),
        (2, 2),
        (3, 1),
        (1, 1),
        (2, 3),
        (4, 1),
        (1, 2),
        (3, 3),
        (2, 1),
        (1, 4),
        (3, 2),
    ]
    grids = np.array(shapes)
    n = int((grids[:, 0] * grids[:, 1]).sum())  # 44
    early = rng.normal(size=(n, 16)).astype(np.float16)
    late = rng.normal(size=(n, 16)).astype(np.float16)
    features = TrainFeatures(early, late, grids=grids, folder=tmp_path)
    forward, backward = new_students(16, seed=1)
    got = normal_score_range(features, forward, backward, torch.device("cpu"))
    with torch.no_grad():
        plain = patch_anomaly(
            forward,
            backward,
            torch.from_numpy(early).float(),
            torch.from_numpy(late).float(),
        )
    assert n % 2 == 0 and n == features.n_patches
    assert got == NormalScores(median=float(plain.median()), max=float(plain.max()))


def grid_features(early: np.ndarray, late: np.ndarray, folder) -> TrainFeatures:
    """(N, h, w, D) fp16 grids as the cache holds them: (N·h·w, D) rows and N grids."""
    n, h, w, dim = early.shape
    rows = early.reshape(-1, dim), late.reshape(-1, dim)  # (N, h, w, D) -> (N·h·w, D)
    return TrainFeatures(*rows, grids=np.full((n, 2), (h, w)), folder=folder)


def test_bf16_training_decreases_the_loss_like_fp32(tmp_path):
    rng = np.random.default_rng(0)
    early = rng.normal(size=(6, 4, 4, 32)).astype(np.float16)
    late = (np.tanh(early) + 0.1 * rng.normal(size=early.shape)).astype(np.float16)
    features = grid_features(early, late, tmp_path)
    config = TrainConfig(epochs=8, batch_size=2, lr=1e-3)
    histories = {}
    for precision in ("fp32", "bf16"):
        forward, backward, history = train_students(
            features, config, torch.device("cpu"), precision
        )
        assert all(
            p.dtype == torch.float32 for p in (*forward.parameters(), *backward.parameters())
        )
        histories[precision] = np.array(history.epoch_losses)
    bf16, fp32 = histories["bf16"], histories["fp32"]
    assert np.isfinite(bf16).all() and np.all(np.diff(bf16) < 0)
    assert bf16[-1] < 0.9 * bf16[0]
    assert np.allclose(bf16, fp32, rtol=0.01)
