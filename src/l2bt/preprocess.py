"""Turning an image of any size into the teacher's square input, and remembering how.

The paper pads every image to a square by replicating its edges (centred), resizes it
with PIL bicubic to the input side, and normalises with ImageNet statistics. The pad
geometry is kept so the anomaly map can be cropped back to exactly the image's pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PadGeometry:
    """Where the original image sits inside its padded square of side `side`."""

    height: int
    width: int
    side: int
    top: int
    left: int

    @classmethod
    def for_size(cls, height: int, width: int) -> PadGeometry:
        side = max(height, width)
        return cls(height, width, side, top=(side - height) // 2, left=(side - width) // 2)


def pad_to_square(image: np.ndarray) -> tuple[np.ndarray, PadGeometry]:
    """Centre an (H, W, 3) image in a square, filling the margin by edge replication."""
    height, width = image.shape[:2]
    geometry = PadGeometry.for_size(height, width)
    bottom = geometry.side - height - geometry.top
    right = geometry.side - width - geometry.left
    padded = np.pad(image, ((geometry.top, bottom), (geometry.left, right), (0, 0)), mode="edge")
    return padded, geometry


def preprocess(image: np.ndarray, size: int) -> tuple[torch.Tensor, PadGeometry]:
    """(H, W, 3) uint8 RGB -> ((3, size, size) normalised float32 tensor, pad geometry)."""
    padded, geometry = pad_to_square(image)
    resized = Image.fromarray(padded).resize((size, size), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0)  # (S, S, 3)
    x = x.permute(2, 0, 1)  # (S, S, 3) -> (3, S, S)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std, geometry
