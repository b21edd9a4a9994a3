"""Turning an image of any size into the teacher's inputs, and remembering how.

Three input modes (SPEC §9, §11):

- `pad` (the paper): the image is centred in a square by replicating its edges, the
  square resized with PIL bicubic to `size` × `size`. Every image gives the same
  (size/14)² patch grid; a long, thin part spends most of its tokens on padding.
- `aspect`: no padding; the image is resized so that its long side is `size` and its
  short side the multiple of 14 nearest to the same scale (at least 14). The patch grid
  follows the image's shape, so a 1130 × 460 part at 1036 px gets 74 × 30 patches
  instead of 74 × 74.
- `tiles`: the image (rescaled by s) is cut into overlapping T × T windows
  (`l2bt.tiling`), each one teacher input; every window has the same (T/14)² grid.

All normalise with ImageNet statistics. The `InputGeometry` records where the image
sits in the frame its anomaly map is upsampled to (the padded square, the image itself,
or the tiles' frame), so the map can be cropped back to exactly the image's pixels. `WorkLimit`
refuses, from the header's size alone, an image whose largest array would pass a limit
(in pad mode a 10000 × 10 image has a 10000² frame).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from PIL import Image

from l2bt.config import INPUT_MODES, InputMode, TeacherConfig, TileSettings
from l2bt.data.image_io import HeaderCheck, ImageTooLarge
from l2bt.teacher.variants import PATCH_SIZE as PATCH
from l2bt.tiling import TileLayout, cut_windows

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Key = TypeVar("Key", bound=Hashable)


@dataclass(frozen=True)
class InputGeometry:
    """How one image became the teacher's input, and how its map goes back.

    `height` × `width`: the original image. `input_height` × `input_width`: the teacher
    input (multiples of 14). `frame_height` × `frame_width`: what the patch map is
    upsampled to before smoothing (pad: the padded square, side max(H, W); aspect: the
    image itself; tiles: the windows' frame). `top`, `left`: where the image sits in that
    frame. `tiles`: the windows' layout in tiles mode (each window one T × T input), else
    None (one input).
    """

    height: int
    width: int
    input_height: int
    input_width: int
    frame_height: int
    frame_width: int
    top: int
    left: int
    tiles: TileLayout | None = None

    @classmethod
    def pad(cls, height: int, width: int, size: int) -> InputGeometry:
        """The paper's geometry: centred in a square of side max(H, W), resized to size²."""
        side, top, left = square_frame(height, width)
        return cls(height, width, size, size, side, side, top, left)

    @classmethod
    def aspect(cls, height: int, width: int, size: int) -> InputGeometry:
        """Long side to `size`, short side to the nearest multiple of 14 (halves round up;
        at least 14), no padding."""
        long_side, short_side = max(height, width), min(height, width)
        patches = int(size * short_side / long_side / PATCH + 0.5)
        short_input = max(PATCH, patches * PATCH)
        input_hw = (size, short_input) if height >= width else (short_input, size)
        return cls(height, width, *input_hw, height, width, top=0, left=0)

    @classmethod
    def tiled(cls, height: int, width: int, settings: TileSettings) -> InputGeometry:
        """T × T windows over the rescaled image; the frame is the windows' frame (the
        scaled image, edge-padded to T in a side shorter than T)."""
        layout = TileLayout.for_image(height, width, settings)
        frame = (layout.frame_height, layout.frame_width)
        return cls(height, width, layout.size, layout.size, *frame, layout.top, layout.left, layout)

    @classmethod
    def for_mode(
        cls, mode: str, height: int, width: int, size: int, tiles: TileSettings | None = None
    ) -> InputGeometry:
        """The geometry of `mode`; `tiles` (default `TileSettings()`) only in tiles mode."""
        if mode == "pad":
            return cls.pad(height, width, size)
        if mode == "aspect":
            return cls.aspect(height, width, size)
        if mode == "tiles":
            return cls.tiled(height, width, tiles or TileSettings())
        raise ValueError(f"input mode must be one of {', '.join(INPUT_MODES)}, got {mode!r}")

    @classmethod
    def of(cls, teacher: TeacherConfig, height: int, width: int) -> InputGeometry:
        """How an H × W image becomes the inputs of a teacher with these settings."""
        return cls.for_mode(teacher.input_mode, height, width, teacher.image_size, teacher.tiles)

    @property
    def n_inputs(self) -> int:
        """Teacher inputs of one image: its windows in tiles mode, else one."""
        return 1 if self.tiles is None else self.tiles.count

    @property
    def work_pixels(self) -> int:
        """Pixels of the largest array one prediction of this image holds: the image and
        its map (H × W), the teacher inputs, or the frame the map is upsampled to."""
        return max(
            self.height * self.width,
            self.n_inputs * self.input_height * self.input_width,
            self.frame_height * self.frame_width,
        )

    @property
    def grid(self) -> tuple[int, int]:
        """The teacher's patch grid (rows, columns)."""
        return self.input_height // PATCH, self.input_width // PATCH

    @property
    def input_shape(self) -> tuple[int, int]:
        """The teacher input's (height, width): inputs of one shape batch together."""
        return self.input_height, self.input_width


def group_indices(keys: Sequence[Key]) -> dict[Key, list[int]]:
    """Positions of equal keys, in order of each key's first appearance (e.g. images by
    input shape, which batch together)."""
    groups: dict[Key, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return groups


@dataclass(frozen=True)
class WorkLimit:
    """A header check (`image_io.HeaderCheck`): refuses an image whose `work_pixels` in
    `mode` at `size` is over `max_pixels`, before any pixel is decoded."""

    mode: InputMode
    size: int
    max_pixels: int
    tiles: TileSettings | None = None

    def __call__(self, height: int, width: int) -> None:
        geometry = InputGeometry.for_mode(self.mode, height, width, self.size, self.tiles)
        if geometry.work_pixels > self.max_pixels:
            raise ImageTooLarge(
                f"an image of {width} x {height} pixels needs arrays of "
                f"{geometry.work_pixels:,} pixels in {self.mode} mode (map frame "
                f"{geometry.frame_width} x {geometry.frame_height}, teacher input "
                f"{geometry.input_width} x {geometry.input_height}), over the limit of "
                f"{self.max_pixels:,} pixels (--max-pixels)"
            )


def header_limit(teacher: TeacherConfig | None, max_pixels: int) -> HeaderCheck:
    """The size check for a predictor with these input settings: `WorkLimit` for its
    input mode and size; the image's own pixels for one without them (no teacher)."""
    if teacher is None:
        return ImagePixelLimit(max_pixels)
    tiles = teacher.tiles if teacher.input_mode == "tiles" else None
    return WorkLimit(teacher.input_mode, teacher.image_size, max_pixels, tiles)


class ImagePixelLimit:
    """Refuses an image of more than `max_pixels` pixels."""

    def __init__(self, max_pixels: int) -> None:
        self.max_pixels = max_pixels

    def __call__(self, height: int, width: int) -> None:
        if width * height > self.max_pixels:
            raise ImageTooLarge(
                f"image of {width} x {height} = {width * height:,} pixels is "
                f"over the limit of {self.max_pixels:,} pixels (--max-pixels)"
            )


def square_frame(height: int, width: int) -> tuple[int, int, int]:
    """(side, top, left): the square of side max(H, W) an image is centred in."""
    side = max(height, width)
    return side, (side - height) // 2, (side - width) // 2


def pad_to_square(image: np.ndarray) -> np.ndarray:
    """Centre an (H, W, 3) image in a square, filling the margin by edge replication."""
    height, width = image.shape[:2]
    side, top, left = square_frame(height, width)
    bottom, right = side - height - top, side - width - left
    return np.pad(image, ((top, bottom), (left, right), (0, 0)), mode="edge")


def preprocess(
    image: np.ndarray, size: int, mode: InputMode = "pad", tiles: TileSettings | None = None
) -> tuple[torch.Tensor, InputGeometry]:
    """(H, W, 3) uint8 RGB -> (normalised float32 input, its geometry).

    The input is (3, h, w) in `pad` mode (size × size) and `aspect` mode (long side
    `size`); (N, 3, T, T), the windows, in `tiles` mode.
    """
    height, width = image.shape[:2]
    geometry = InputGeometry.for_mode(mode, height, width, size, tiles)
    inputs = teacher_inputs(image, geometry)
    return (inputs if geometry.tiles is not None else inputs[0]), geometry


def teacher_inputs(image: np.ndarray, geometry: InputGeometry) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (n_inputs, 3, h, w) normalised float32 teacher inputs of
    `geometry` (one input, or the windows in tiles mode)."""
    return normalise(teacher_pixels(image, geometry))


def teacher_pixels(image: np.ndarray, geometry: InputGeometry) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (n_inputs, h, w, 3) uint8: the teacher's inputs before
    normalisation (a quarter of the float32 bytes, so callers normalise batch by batch)."""
    if geometry.tiles is not None:
        return cut_windows(image, geometry.tiles)  # (N, T, T, 3)
    padded = (geometry.frame_height, geometry.frame_width) != image.shape[:2]
    source = pad_to_square(image) if padded else image  # pad mode's square, or the image
    resized = Image.fromarray(source).resize(
        (geometry.input_width, geometry.input_height), Image.Resampling.BICUBIC
    )
    return np.asarray(resized)[None]  # (h, w, 3) -> (1, h, w, 3)


def normalise(pixels: np.ndarray, device: torch.device | None = None) -> torch.Tensor:
    """(N, h, w, 3) uint8 -> (N, 3, h, w) float32 on `device` (default the CPU),
    ImageNet-normalised. The uint8 bytes are what is moved: the arithmetic runs there."""
    pixels = np.require(pixels, np.uint8, ("C_CONTIGUOUS", "WRITEABLE"))  # torch's view
    x = torch.from_numpy(pixels).to(device).float() / 255.0
    x = x.permute(0, 3, 1, 2)  # (N, h, w, 3) -> (N, 3, h, w)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
