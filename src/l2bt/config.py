"""Frozen configuration of an L2BT model: what a run folder's `config.json` holds."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from l2bt.errors import InputError
from l2bt.preprocess import INPUT_MODES, InputGeometry
from l2bt.teacher.vit import ARCHITECTURES
from l2bt.tiling import TileSettings
from l2bt.utils.typed_dict import typed_fields


@dataclass(frozen=True)
class TeacherConfig:
    """Which frozen teacher, which layers, at which input size (paper defaults)."""

    variant: str = "dinov2_vitb14_reg"
    weights: str | None = None  # None: official checkpoint; a path or URL; or "random"
    image_size: int = 1036  # input side (pad) or long side (aspect), a multiple of 14
    layers: tuple[int, int] = (7, 11)  # forward student maps layers[0] -> layers[1]
    input_mode: str = "pad"  # "pad": the paper's square; "aspect": no padding (SPEC §9)
    # tiles mode (SPEC §11): window side T, least overlap (None: T // 4), rescale factor s
    tile_size: int = 518
    tile_overlap: int | None = None
    tile_scale: float = 1.0

    def __post_init__(self) -> None:  # each message starts with the field's name
        if self.variant not in ARCHITECTURES:
            raise InputError(
                f"variant must be one of {', '.join(ARCHITECTURES)}, got {self.variant!r}"
            )
        if self.image_size <= 0 or self.image_size % 14:
            raise InputError(f"image_size must be a positive multiple of 14, got {self.image_size}")
        depth = ARCHITECTURES[self.variant].depth
        if len(self.layers) != 2 or self.layers[0] == self.layers[1]:
            raise InputError(f"layers must be two different block indices, got {self.layers}")
        if not all(0 <= i < depth for i in self.layers):
            raise InputError(
                f"layers must be in 0..{depth - 1} for {self.variant}, got {self.layers}"
            )
        if self.input_mode not in INPUT_MODES:
            raise InputError(
                f"input_mode must be one of {', '.join(INPUT_MODES)}, got {self.input_mode!r}"
            )
        TileSettings(self.tile_size, self.tile_overlap, self.tile_scale)  # checks them

    @property
    def tiles(self) -> TileSettings:
        """The tile settings (used in tiles mode only)."""
        return TileSettings(self.tile_size, self.tile_overlap, self.tile_scale)

    def geometry(self, height: int, width: int) -> InputGeometry:
        """How an H × W image becomes this teacher's inputs."""
        return InputGeometry.for_mode(self.input_mode, height, width, self.image_size, self.tiles)

    def cache_description(self) -> dict[str, Any]:
        """The input settings teacher features depend on (part of feature-cache keys):
        the tile settings only in tiles mode, so other modes keep their keys."""
        described: dict[str, Any] = {"image_size": self.image_size, "input_mode": self.input_mode}
        if self.input_mode == "tiles":
            tiles = self.tiles
            described["tiles"] = [tiles.size, tiles.min_overlap, tiles.scale]
        return described


@dataclass(frozen=True)
class TrainConfig:
    """Student training hyper-parameters (paper defaults)."""

    epochs: int = 50
    batch_size: int = 4  # images per step; every patch of every image is a sample
    lr: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:  # the message starts with the fields' names
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise InputError(
                f"epochs and batch_size must be ≥ 1 and lr > 0, got {self.epochs}, "
                f"{self.batch_size}, {self.lr}"
            )


@dataclass(frozen=True)
class L2BTConfig:
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object, key: str = "config") -> L2BTConfig:
        """From JSON a person may have edited: each problem names its key (`config.x.y`)."""
        parts = typed_fields(cls, data, key)
        built: dict[str, Any] = {}
        for name, part_cls in (("teacher", TeacherConfig), ("train", TrainConfig)):
            if name not in parts:
                raise InputError(f"{key}.{name} is missing")
            values = typed_fields(part_cls, parts[name], f"{key}.{name}")
            try:
                built[name] = part_cls(**values)
            except InputError as e:
                raise InputError(f"{key}.{name}.{e.problem}") from e
        return cls(**built)


def content_digest(description: Mapping[str, Any]) -> str:
    """A short SHA-256 digest (24 hex digits) of a JSON-able description, keys sorted: the
    key of every cache and artefact that depends on settings and files."""
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:24]
