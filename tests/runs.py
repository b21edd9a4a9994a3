"""A tiny fitted run shared by the service's and the CLI's tests (never a test file itself):
one epoch of a random teacher on four images, with thresholds inside its maps' range, and
the module-scoped fixtures `fitted`, `run_dir` and `model` of conftest.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from helpers import textured_image
from l2bt.config import L2BTConfig, TeacherConfig, TrainConfig
from l2bt.decisions.thresholds import Thresholds
from l2bt.model import L2BT


def fit_tiny_run(root: Path) -> tuple[Path, L2BT]:
    """A tiny random-teacher run (one epoch on 4 images) and its folder, with thresholds
    set inside the maps' range (a random teacher separates nothing, so calibrated ones
    would give empty masks): pixel at the lower of the sample maps' 90th percentiles,
    image at the median sample score."""
    train = []
    for seed in range(4):
        train.append(root / f"train/{seed}.png")
        train[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(textured_image(40 + 4 * seed, 50, seed)).save(train[-1])
    config = L2BTConfig(TeacherConfig("dinov2_vits14", "random", 56), TrainConfig(epochs=1))
    model = L2BT.fit(train, config, device="cpu", cache_dir=root / "cache")
    predictions = [model.predict(image) for image in sample_images()]
    model.thresholds = Thresholds(
        image=float(np.median([p.score for p in predictions])),
        pixel=min(float(np.quantile(p.anomaly_map, 0.9)) for p in predictions),
        false_alarm_rate=0.2,
        guaranteed_rate=0.2,
        n_calibration=2,
        calibration_images=("a.png", "b.png"),
    )
    return model.save(root / "run"), model


def sample_images() -> list[np.ndarray]:
    return [textured_image(h, w, 100 + i) for i, (h, w) in enumerate(((40, 60), (56, 42)))]
