"""The record of a trained run: one typed, checked description, and the one reader and
writer of a run folder's `config.json`.

A `RunDescription` says what a trained run is (its method, the teacher and input
settings, the students' training settings, the compute precision, the bit depth its
images are read with) and what is known of how it was made and how it decides (the
teacher's weights identity, the training and data facts, the students' identity, the
thresholds, the colour scale of its overlays). Every predictor exposes one: an L2BT run
folder, an exported ONNX file (its metadata holds the same JSON) and every benchmarked
method; the service, predict, the viewer, provenance, the benchmark and evaluate read its
fields. `config.json` is user input: `RunDescription.from_dict` checks every key (one
line naming the key), requires what a run needs, and reads every layout earlier l2bt
versions wrote (tile settings as flat `tile_*` keys; no method, no students identity).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from l2bt import __version__
from l2bt.config import (
    L2BTConfig,
    Precision,
    TeacherConfig,
    TileSettings,
    TrainConfig,
    check_precision,
)
from l2bt.decisions.thresholds import Thresholds
from l2bt.errors import InputError
from l2bt.utils.atomic import write_text_atomic
from l2bt.utils.typed_dict import built, typed_fields

RUN_FORMAT = "l2bt-run/1"
CONFIG_FILE = "config.json"  # the record, in every run folder and method work folder
STUDENTS_FILE = "students.safetensors"
LOSS_PLOT = "loss.png"
L2BT_METHOD = "l2bt"
TEACHER_REQUIRED = ("variant", "weights", "image_size", "layers")  # in every run since 0.1
TRAIN_REQUIRED = ("epochs", "batch_size", "lr", "seed")
TOP_LEVEL_KEYS = (
    "format",
    "l2bt_version",
    "method",
    "config",
    "teacher",
    "precision",
    "bit_depth",
    "data",
    "training",
    "students",
    "normal_patch_scores",
    "thresholds",
)
OLD_TILE_KEYS = {"tile_size": "size", "tile_overlap": "overlap", "tile_scale": "scale"}


@dataclass(frozen=True)
class NormalScores:
    """Median and maximum patch anomaly over the training images: the colour scale of
    overlays (blue at the median of defect-free patches, red beyond their maximum)."""

    median: float
    max: float


@dataclass(frozen=True)
class TrainingFacts:
    """How the students were trained (`training.describe_training`)."""

    n_images: int
    first_image: str
    epoch_losses: tuple[float, ...]
    student_seconds: float
    feature_seconds: float
    device: str
    created: str
    torch: str
    python: str


@dataclass(frozen=True)
class CalibrationFacts:
    """Which defect-free images calibrated the thresholds, and how they were chosen."""

    source: str
    n_calibration: int
    calibration_images: tuple[str, ...]


@dataclass(frozen=True)
class DataFacts:
    """The data the run was fitted on."""

    root: str
    category: str
    dataset: str
    calibration: CalibrationFacts | None = None


@dataclass(frozen=True)
class StudentsIdentity:
    """Which students belong to the run: the SHA-256 prefix of `students.safetensors`, their
    width, and a digest of the settings they were trained with (`trained_with`)."""

    digest: str
    dim: int
    trained_with: str


@dataclass(frozen=True)
class RunDescription:
    """A trained run (see the module docstring). `teacher` and `weights_id` are None for
    a method without the DINOv2 teacher; `train` is the L2BT students' training."""

    method: str
    teacher: TeacherConfig | None
    weights_id: str | None
    embed_dim: int | None
    precision: Precision = "fp32"
    train: TrainConfig | None = None
    bit_depth: int | None = None
    normal_scores: NormalScores | None = None
    thresholds: Thresholds | None = None
    training: TrainingFacts | None = None
    data: DataFacts | None = None
    students: StudentsIdentity | None = None
    l2bt_version: str = __version__

    def __post_init__(self) -> None:
        check_bit_depth(self.bit_depth)

    @property
    def colour_range(self) -> tuple[float, float] | None:
        """The overlays' colour scale (None: each map its own range)."""
        scores = self.normal_scores
        return None if scores is None else (scores.median, scores.max)

    @property
    def l2bt_config(self) -> L2BTConfig:
        """The teacher and training settings of an L2BT run."""
        if self.teacher is None or self.train is None:
            raise InputError(f"a {self.method} run has no L2BT configuration")
        return L2BTConfig(self.teacher, self.train)

    def with_thresholds(self, thresholds: Thresholds | None) -> RunDescription:
        return replace(self, thresholds=thresholds)

    def to_dict(self) -> dict[str, Any]:
        """The JSON of `config.json` (the layout every l2bt version reads)."""
        described: dict[str, Any] = {
            "format": RUN_FORMAT,
            "l2bt_version": self.l2bt_version,
            "method": self.method,
            "config": _config_dict(self.teacher, self.train),
            "teacher": {"weights_id": self.weights_id, "embed_dim": self.embed_dim},
            "precision": self.precision,
            "bit_depth": self.bit_depth,
        }
        for name in ("data", "training", "students"):
            value = getattr(self, name)
            described[name] = None if value is None else asdict(value)
        described["normal_patch_scores"] = (
            None if self.normal_scores is None else asdict(self.normal_scores)
        )
        described["thresholds"] = None if self.thresholds is None else self.thresholds.to_dict()
        return described

    @classmethod
    def from_dict(cls, data: object) -> RunDescription:
        """From `config.json` as a person may have edited it: each problem one line
        naming its key (`config.teacher.layers is missing`)."""
        if not isinstance(data, dict) or data.get("format") != RUN_FORMAT:
            found = data.get("format") if isinstance(data, dict) else data
            raise InputError(f"unknown run format {found!r} (expected {RUN_FORMAT})")
        unknown = sorted(set(data) - set(TOP_LEVEL_KEYS))
        if unknown:
            raise InputError(f"{unknown[0]} is not a known key of a run's {CONFIG_FILE}")
        method = data.get("method", L2BT_METHOD)
        if not isinstance(method, str):
            raise InputError(f"method must be a string, got {method!r}")
        teacher, train = _config(data.get("config"), method)
        identity = data.get("teacher") or {}
        if not isinstance(identity, dict):
            raise InputError(f"teacher must be an object, got {identity!r}")
        weights_id, embed_dim = identity.get("weights_id"), identity.get("embed_dim")
        if teacher is not None and not isinstance(weights_id, str):
            raise InputError(f"teacher.weights_id must be a string, got {weights_id!r}")
        if teacher is not None and not isinstance(embed_dim, int):
            raise InputError(f"teacher.embed_dim must be an integer, got {embed_dim!r}")
        return cls(
            method=method,
            teacher=teacher,
            weights_id=weights_id,
            embed_dim=embed_dim,
            precision=check_precision(data.get("precision", "fp32")),
            train=train,
            bit_depth=_bit_depth(data.get("bit_depth")),
            l2bt_version=str(data.get("l2bt_version", "unknown")),
            **_facts(data),
        )


def _facts(data: Mapping[str, Any]) -> dict[str, Any]:
    """The optional parts of a record, each checked."""
    stored = data.get("thresholds")
    return {
        "normal_scores": _optional(
            NormalScores, data.get("normal_patch_scores"), "normal_patch_scores"
        ),
        "thresholds": None if stored is None else Thresholds.from_dict(stored),
        "training": _optional(TrainingFacts, data.get("training"), "training"),
        "data": _data_facts(data.get("data")),
        "students": _optional(StudentsIdentity, data.get("students"), "students"),
    }


def _optional(cls: type, value: object, key: str) -> Any:
    return None if value is None else built(cls, typed_fields(cls, value, key), key)


def _data_facts(value: object) -> DataFacts | None:
    if value is None:
        return None
    fields = typed_fields(DataFacts, value, "data")
    calibration = fields.get("calibration")
    if calibration is not None:
        fields["calibration"] = _optional(CalibrationFacts, calibration, "data.calibration")
    return built(DataFacts, fields, "data")


def _config(value: object, method: str) -> tuple[TeacherConfig | None, TrainConfig | None]:
    """config.teacher and config.train; both required for an L2BT run."""
    if not isinstance(value, dict):
        raise InputError(f"config must be an object, got {value!r}")
    unknown = sorted(set(value) - {"teacher", "train"})
    if unknown:
        raise InputError(f"config.{unknown[0]} is not a known setting")
    if method == L2BT_METHOD:
        for part in ("teacher", "train"):
            if value.get(part) is None:
                raise InputError(f"config.{part} is missing")
    teacher, train = value.get("teacher"), value.get("train")
    if teacher is not None:
        teacher = teacher_config_from(teacher, "config.teacher")
    if train is not None:
        fields = typed_fields(TrainConfig, train, "config.train", required=TRAIN_REQUIRED)
        train = built(TrainConfig, fields, "config.train")
    return teacher, train


def teacher_config_from(data: object, key: str) -> TeacherConfig:
    """A `TeacherConfig` from JSON; tile settings nested (`tiles`) or, as runs before 0.2
    wrote them, flat (`tile_size`, `tile_overlap`, `tile_scale`)."""
    if not isinstance(data, dict):
        raise InputError(f"{key} must be an object, got {data!r}")
    data = dict(data)
    flat = {OLD_TILE_KEYS[k]: data.pop(k) for k in list(data) if k in OLD_TILE_KEYS}
    if flat:
        data.setdefault("tiles", flat)
    values = typed_fields(TeacherConfig, data, key, required=TEACHER_REQUIRED)
    if "tiles" in values:
        tiles = typed_fields(TileSettings, values["tiles"], f"{key}.tiles")
        values["tiles"] = built(TileSettings, tiles, f"{key}.tiles")
    return built(TeacherConfig, values, key)


def _config_dict(teacher: TeacherConfig | None, train: TrainConfig | None) -> dict[str, Any]:
    described: dict[str, Any] = {}
    if teacher is not None:
        described["teacher"] = asdict(teacher)
    if train is not None:
        described["train"] = asdict(train)
    return described


def check_bit_depth(depth: int | None) -> None:
    if depth is not None and not 8 <= depth <= 16:
        raise InputError(f"--bit-depth must be between 8 and 16, got {depth}")


def _bit_depth(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"bit_depth must be an integer or null, got {value!r}")
    return value


def read_run(run_dir: Path) -> RunDescription:
    """The record in `run_dir/config.json`, checked; problems name the file."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise InputError(f"not an l2bt run folder (no {CONFIG_FILE})", run_dir)
    return parse_run(path.read_bytes(), path)


def parse_run(text: str | bytes, where: Path | str) -> RunDescription:
    """A record from the JSON text of a config.json (or an exported file's metadata)."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"unreadable run configuration ({e})", where) from e
    try:
        return RunDescription.from_dict(data)
    except InputError as e:
        raise InputError(e.problem, where) from e


def write_run(folder: Path, record: RunDescription) -> Path:
    """Write `record` as `folder/config.json`, atomically."""
    path = Path(folder) / CONFIG_FILE
    write_text_atomic(path, json.dumps(record.to_dict(), indent=2) + "\n")
    return path
