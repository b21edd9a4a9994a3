"""The whole prediction of one image as one `nn.Module`, written to be exported to ONNX.

`L2BTGraph` wraps an `L2BT` model (apart from `model.py`, as segment-anything keeps its
ONNX wrapper apart) and computes, from one uint8 (H, W, 3) image of any size: the
geometry (pad mode's edge pad to a square), PIL's bicubic resize emulated as two rounded
one-dimensional antialiased passes, normalisation, the teacher with its position
embeddings resized once at export time, the students and the patch anomaly, upsampling,
the paper's smoothing, the crop to H × W, the top-k score and, with thresholds, the mask
and verdict. The graph differs from the torch engine only by PIL's fixed-point resize
weights (a grey level now and then). Limits: one image per call, fp32; an aspect-mode
graph has one fixed input grid (`input_hw`). Step by step: docs/design.md; measured
parity: benchmarks/README.md.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from l2bt.anomaly_map import patch_anomaly, smooth
from l2bt.model import L2BT
from l2bt.preprocess import IMAGENET_MEAN, IMAGENET_STD, PATCH
from l2bt.teacher import Teacher

MAP_OUTPUTS = ("anomaly_map", "score")
DECISION_OUTPUTS = ("mask", "defective")


class FixedGridTeacher(nn.Module):
    """The teacher's blocks 0..max(layers) for one input size, position embeddings frozen.

    Reads the teacher's own modules and parameters; the position embeddings are those
    `interpolate_pos_encoding` gives for the grid, computed once here.
    """

    position: torch.Tensor

    def __init__(self, teacher: Teacher, grid: tuple[int, int], layers: tuple[int, int]) -> None:
        super().__init__()
        self.grid = grid
        self.layers = layers
        self.patch_embed = teacher.patch_embed
        self.cls_token = teacher.cls_token
        self.num_registers = teacher.num_register_tokens
        if self.num_registers:
            self.register_tokens = teacher.register_tokens
        self.blocks = nn.ModuleList(teacher.blocks[: max(layers) + 1])
        self.norm = teacher.norm
        with torch.no_grad():
            position = teacher.interpolate_pos_encoding(*grid).detach().clone()
        self.register_buffer("position", position)  # (1, 1 + h·w, D)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, h, w) normalised inputs -> the two layers' (B, h/14, w/14, D) patch tokens."""
        batch = x.shape[0]
        tokens = self.patch_embed(x)  # (B, h·w, D)
        tokens = torch.cat((self.cls_token.expand(batch, -1, -1), tokens), dim=1) + self.position
        if self.num_registers:
            registers = self.register_tokens.expand(batch, -1, -1)
            tokens = torch.cat((tokens[:, :1], registers, tokens[:, 1:]), dim=1)
        first_patch = 1 + self.num_registers
        kept: dict[int, torch.Tensor] = {}
        for index, block in enumerate(self.blocks):
            tokens = block(tokens)
            if index in self.layers:
                patches = self.norm(tokens)[:, first_patch:]
                kept[index] = patches.reshape(batch, *self.grid, -1)  # (B, h·w, D) -> (B, h, w, D)
        return kept[self.layers[0]], kept[self.layers[1]]


def pil_bicubic(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(1, 3, H, W) float 0..255 -> (1, 3, height, width) as PIL's 8-bit bicubic resize:
    horizontal pass, round and clip, vertical pass, round and clip."""
    rows = pixels.shape[2]
    pixels = (
        F.interpolate(
            pixels, size=(rows, width), mode="bicubic", antialias=True, align_corners=False
        )
        .round()
        .clamp(0, 255)
    )
    return (
        F.interpolate(
            pixels, size=(height, width), mode="bicubic", antialias=True, align_corners=False
        )
        .round()
        .clamp(0, 255)
    )


class L2BTGraph(nn.Module):
    """One image in, its map, score and (with thresholds) mask and verdict out.

    `forward(image)`: image uint8 (H, W, 3) -> anomaly_map float32 (H, W), score float32
    () [, mask uint8 (H, W) 0/255, defective bool ()]. `input_hw` is the teacher's input
    (pad mode: size × size, the default; aspect mode: required).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: L2BT, input_hw: tuple[int, int] | None = None) -> None:
        super().__init__()
        config = model.config.teacher
        self.pad = config.input_mode == "pad"
        size = config.image_size
        self.input_hw = (size, size) if input_hw is None else input_hw
        if self.pad and self.input_hw != (size, size):
            raise ValueError(f"pad mode has a {size} x {size} input, not {self.input_hw}")
        if self.input_hw[0] % PATCH or self.input_hw[1] % PATCH:
            raise ValueError(f"input {self.input_hw} is not a multiple of {PATCH}")
        grid = (self.input_hw[0] // PATCH, self.input_hw[1] // PATCH)
        self.teacher = FixedGridTeacher(model.teacher, grid, config.layers)
        self.forward_student = model.forward_student
        self.backward_student = model.backward_student
        self.thresholds = model.thresholds
        self.register_buffer("mean", 255.0 * torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", 255.0 * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    @property
    def output_names(self) -> tuple[str, ...]:
        return MAP_OUTPUTS + (DECISION_OUTPUTS if self.thresholds is not None else ())

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        height, width = image.shape[0], image.shape[1]
        frame, offsets = self.frame(height, width)
        early, late = self.teacher(self.teacher_input(image, frame, offsets))
        patches = patch_anomaly(self.forward_student, self.backward_student, early, late)
        anomaly_map = frame_map(patches, frame, offsets, (height, width))
        return self.decide(anomaly_map, top_k_mean(anomaly_map))

    def frame(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """((frame height, width), (top, left)): what the map is upsampled to and where the
        image sits in it, as `InputGeometry` (symbolic sizes while exporting)."""
        if not self.pad:
            return (height, width), (0, 0)
        side = cast(int, torch.sym_max(height, width))  # a SymInt while exporting
        return (side, side), ((side - height) // 2, (side - width) // 2)

    def teacher_input(
        self, image: torch.Tensor, frame: tuple[int, int], offsets: tuple[int, int]
    ) -> torch.Tensor:
        """uint8 (H, W, 3) -> the normalised (1, 3, h, w) teacher input."""
        pixels = image.permute(2, 0, 1).unsqueeze(0).float()  # (H, W, 3) -> (1, 3, H, W)
        if self.pad:
            (side, _), (top, left) = frame, offsets
            height, width = image.shape[0], image.shape[1]
            pixels = F.pad(
                pixels, (left, side - width - left, top, side - height - top), mode="replicate"
            )
        pixels = pil_bicubic(pixels, *self.input_hw)
        return (pixels - self.mean) / self.std

    def decide(self, anomaly_map: torch.Tensor, score: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.thresholds is None:
            return anomaly_map, score
        mask = (anomaly_map > self.thresholds.mask_threshold).to(torch.uint8) * 255
        return anomaly_map, score, mask, score > self.thresholds.image


def frame_map(
    patches: torch.Tensor,
    frame: tuple[int, int],
    offsets: tuple[int, int],
    image_hw: tuple[int, int],
) -> torch.Tensor:
    """(1, h, w) patch anomaly -> the (H, W) map: upsample to the frame, smooth, crop."""
    maps = F.interpolate(
        patches.unsqueeze(1), size=frame, mode="bilinear", align_corners=False
    )  # (1, h, w) -> (1, 1, frame_h, frame_w)
    maps = smooth(maps)
    (top, left), (height, width) = offsets, image_hw
    return maps[0, 0, top : top + height, left : left + width]  # (1, 1, fh, fw) -> (H, W)


def top_k_mean(anomaly_map: torch.Tensor) -> torch.Tensor:
    """The image score: mean of the k = max(1, ⌊H·W/1000⌋) largest map values."""
    values = anomaly_map.reshape(-1)  # (H, W) -> (H·W,)
    k = torch.sym_max(1, values.shape[0] // 1000)
    return torch.topk(values, k).values.mean()
