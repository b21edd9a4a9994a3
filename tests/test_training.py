"""The overlay colour scale stored at fit time: median and maximum patch anomaly over
every training patch, streamed in groups of inputs."""

import numpy as np
import torch

from l2bt.anomaly_map import patch_anomaly
from l2bt.features import TrainFeatures
from l2bt.run import NormalScores
from l2bt.training import new_students, normal_score_range


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
