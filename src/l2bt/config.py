"""Frozen settings of a run: which teacher sees which input, and how the students train.

Nothing here imports torch or numpy: the command line builds and checks these settings
(and shows their defaults in `--help`) before any heavy import. Each default is written
once, here; the CLI reads it from the dataclasses. A run folder's `config.json` holds
them under "config" (read and written by `l2bt.run`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast, get_args

from l2bt.errors import InputError
from l2bt.teacher.variants import ARCHITECTURES, PATCH_SIZE

Precision = Literal["fp32", "bf16"]  # compute precision of teacher and students
InputMode = Literal["pad", "aspect", "tiles"]  # SPEC §9, §11
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
INPUT_MODES: tuple[InputMode, ...] = get_args(InputMode)
FALSE_ALARM_RATE = 0.01  # α of the image and pixel thresholds (SPEC §7), unless asked
PATCH_BATCH = 1024  # patches per step outside pad mode: fastest on the 2-core CPU (bench_training)


def check_precision(value: str) -> Precision:
    """`value` as a `Precision`, or one line saying which there are."""
    if value not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {value!r}")
    return cast(Precision, value)


@dataclass(frozen=True)
class TileSettings:
    """Tiles mode (SPEC §11): window side `size` (T), least overlap between neighbours
    (default T // 4) and the rescale factor applied to the image first."""

    size: int = 518
    overlap: int | None = None
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.size <= 0 or self.size % PATCH_SIZE:
            raise InputError(
                f"--tile-size must be a positive multiple of {PATCH_SIZE}, got {self.size}"
            )
        if self.overlap is None:
            object.__setattr__(self, "overlap", self.size // 4)
        if not 0 <= self.min_overlap < self.size:
            raise InputError(
                f"--tile-overlap must be in [0, {self.size}) for --tile-size "
                f"{self.size}, got {self.overlap}"
            )
        if not 0.0 < self.scale <= 1.0:
            raise InputError(f"--tile-scale must be in (0, 1], got {self.scale}")

    @property
    def min_overlap(self) -> int:
        """The overlap in pixels (the default resolved to T // 4)."""
        return self.size // 4 if self.overlap is None else self.overlap


@dataclass(frozen=True)
class TeacherConfig:
    """Which frozen teacher, which layers, and how an image becomes its input (paper
    defaults): the input settings every method on the teacher shares."""

    variant: str = "dinov2_vitb14_reg"
    weights: str | None = None  # None: official checkpoint; a path or URL; or "random"
    image_size: int = 1036  # input side (pad) or long side (aspect), a multiple of 14
    layers: tuple[int, int] = (7, 11)  # forward student maps layers[0] -> layers[1]
    input_mode: InputMode = "pad"  # "pad": the paper's square; "aspect": no padding
    tiles: TileSettings = field(default_factory=TileSettings)  # tiles mode only

    def __post_init__(self) -> None:  # each message starts with the field's name
        if self.variant not in ARCHITECTURES:
            raise InputError(
                f"variant must be one of {', '.join(ARCHITECTURES)}, got {self.variant!r}"
            )
        if self.image_size <= 0 or self.image_size % PATCH_SIZE:
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

    def cache_description(self) -> dict[str, Any]:
        """The input settings teacher features depend on (part of feature-cache keys):
        the tile settings only in tiles mode, so other modes keep their keys."""
        described: dict[str, Any] = {"image_size": self.image_size, "input_mode": self.input_mode}
        if self.input_mode == "tiles":
            described["tiles"] = [self.tiles.size, self.tiles.min_overlap, self.tiles.scale]
        return described


@dataclass(frozen=True)
class TrainConfig:
    """Student training hyper-parameters (paper defaults).

    A step is every patch of `batch_size` inputs (images, or windows in tiles mode: the
    paper's recipe) when `patch_batch` is 0, else `patch_batch` patches drawn across all
    cached inputs (`l2bt.patch_batches`); None: the input mode's default
    (`resolved_patch_batch`), which a trained run records as a number.
    """

    epochs: int = 50
    batch_size: int = 4  # inputs per step when patch_batch is 0
    lr: float = 1e-4
    seed: int = 0
    patch_batch: int | None = None  # patches per step; 0: steps of batch_size inputs

    def __post_init__(self) -> None:  # the message starts with the fields' names
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise InputError(
                f"epochs and batch_size must be ≥ 1 and lr > 0, got {self.epochs}, "
                f"{self.batch_size}, {self.lr}"
            )
        if self.patch_batch is not None and self.patch_batch < 0:
            raise InputError(f"--patch-batch must be 0 or more, got {self.patch_batch}")


def resolved_patch_batch(train: TrainConfig, input_mode: InputMode) -> int:
    """Patches per step (0: steps of `batch_size` inputs). By default pad mode keeps the
    paper's recipe (4 images per step); tiles and aspect modes, whose inputs are windows
    or images of many shapes, step over `PATCH_BATCH` patches drawn across all inputs."""
    if train.patch_batch is not None:
        return train.patch_batch
    return 0 if input_mode == "pad" else PATCH_BATCH


@dataclass(frozen=True)
class L2BTConfig:
    """What an L2BT run is: its teacher and input settings, and its students' training."""

    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def content_digest(description: Mapping[str, Any]) -> str:
    """A short SHA-256 digest (24 hex digits) of a JSON-able description, keys sorted: the
    key of every cache and artefact that depends on settings and files."""
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:24]
