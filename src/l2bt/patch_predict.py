"""The road from images of any size to full-resolution predictions, for any patch scorer.

Every method that scores the teacher's patches (L2BT's students, PatchCore's memory
bank, Dinomaly's decoder) needs the same steps around its scorer: preprocess each image
(`pad` or `aspect` mode), run the teacher on batches of inputs that share a shape,
score the patches, upsample, smooth and crop the maps of images that share a geometry
together, and score each image. `predict_images` is that road, so the methods differ
only in how they score patches.

Memory: the inputs of one call, one batch of teacher activations per input shape, and
one map per image at its own size.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

import numpy as np
import torch

from l2bt.anomaly_map import image_score, to_image_maps
from l2bt.prediction import Prediction
from l2bt.preprocess import InputGeometry, preprocess

PatchScorer = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, h, w) -> (B, h/14, w/14)
MapMaker = Callable[[torch.Tensor, InputGeometry], np.ndarray]  # (B, h, w) -> (B, H, W)
Key = TypeVar("Key", bound=Hashable)


def group_indices(keys: Sequence[Key]) -> dict[Key, list[int]]:
    """Positions of equal keys, in order of each key's first appearance."""
    groups: dict[Key, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return groups


@torch.inference_mode()
def predict_images(
    score_patches: PatchScorer,
    images: Sequence[np.ndarray],
    image_size: int,
    input_mode: str,
    device: torch.device,
    to_maps: MapMaker = to_image_maps,
    score: Callable[[np.ndarray], float] = image_score,
) -> list[Prediction]:
    """(H, W, 3) uint8 images -> a Prediction each, its map exactly the image's H × W."""
    prepared = [preprocess(image, image_size, input_mode) for image in images]
    geometries = [geometry for _, geometry in prepared]
    shapes = [(g.input_height, g.input_width) for g in geometries]
    patch_maps: dict[int, torch.Tensor] = {}
    for indices in group_indices(shapes).values():
        x = torch.stack([prepared[i][0] for i in indices]).to(device)  # (B, 3, h, w)
        for i, patch_map in zip(indices, score_patches(x), strict=True):
            patch_maps[i] = patch_map
    maps: dict[int, np.ndarray] = {}
    for geometry, indices in group_indices(geometries).items():
        batch = torch.stack([patch_maps[i] for i in indices])  # (B, h/14, w/14)
        for i, anomaly_map in zip(indices, to_maps(batch, geometry), strict=True):
            maps[i] = anomaly_map
    return [Prediction(maps[i], score(maps[i])) for i in range(len(images))]
