"""A run's `students.safetensors`: both students, and what they belong to.

The file holds the forward and backward students' tensors and, in its metadata, their
width and `trained_with`: a digest of the settings they were trained with (teacher
variant and weights identity, layers, input size and mode, training settings,
precision). The run's record keeps the same digest and the file's SHA-256 prefix, so a
students file copied in from another run is refused in one line when loading, whether
its settings differ (the digests) or not (another seed: the file's hash). Files of
earlier runs, without metadata or identity, are checked by their width alone.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import safe_open

from l2bt.config import content_digest
from l2bt.errors import InputError
from l2bt.run import STUDENTS_FILE, RunDescription, StudentsIdentity
from l2bt.students import Student
from l2bt.utils.tensor_files import save_tensors

PREFIXES = ("forward.", "backward.")
FORMAT = "l2bt-students/1"


def trained_with(record: RunDescription) -> tuple[str, str]:
    """(digest, words) of the settings students of this run were trained with."""
    config = record.l2bt_config
    teacher = config.teacher
    described = {
        "variant": teacher.variant,
        "weights_id": record.weights_id,
        "layers": list(teacher.layers),
        **teacher.cache_description(),
        "train": [config.train.epochs, config.train.batch_size, config.train.lr],
        "seed": config.train.seed,
        "precision": record.precision,
    }
    words = (
        f"{teacher.variant} (weights {record.weights_id}), {teacher.image_size} px "
        f"{teacher.input_mode}, layers {teacher.layers[0]}->{teacher.layers[1]}, "
        f"seed {config.train.seed}"
    )
    return content_digest(described), words


def save_students(
    run_dir: Path, forward: Student, backward: Student, record: RunDescription
) -> StudentsIdentity:
    """Write both students into `run_dir` with their metadata; their identity."""
    path = Path(run_dir) / STUDENTS_FILE
    tensors = {f"forward.{k}": v for k, v in forward.state_dict().items()}
    tensors |= {f"backward.{k}": v for k, v in backward.state_dict().items()}
    digest, words = trained_with(record)
    dim = forward.linears()[0].in_features
    metadata = {"format": FORMAT, "dim": str(dim), "trained_with": digest, "settings": words}
    save_tensors(path, tensors, metadata)
    return StudentsIdentity(file_digest(path), dim, digest)


def load_students(run_dir: Path, record: RunDescription, dim: int) -> tuple[Student, Student]:
    """The run's students, refused in one line when they are not the run's own or do not
    fit a teacher of width `dim`."""
    path = Path(run_dir) / STUDENTS_FILE
    if not path.is_file():
        raise InputError(f"missing {STUDENTS_FILE} in run folder", run_dir)
    tensors, metadata = _read(path)
    _check_identity(path, record, metadata)
    first = tensors.get("forward.layers.0.weight")  # (D, D)
    found = None if first is None else int(first.shape[1])
    if found != dim:
        raise InputError(
            f"the students are {found} wide but the run's teacher "
            f"{record.l2bt_config.teacher.variant} is {dim} wide: not this run's students",
            path,
        )
    return _student(tensors, PREFIXES[0], dim, path), _student(tensors, PREFIXES[1], dim, path)


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return {name: f.get_tensor(name) for name in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise InputError(f"unreadable student weights ({e})", path) from e


def _check_identity(path: Path, record: RunDescription, metadata: dict[str, str]) -> None:
    """The file's settings digest, then its hash, against the record's."""
    expected, words = trained_with(record)
    if "trained_with" in metadata and metadata["trained_with"] != expected:
        raise InputError(
            f"these students were trained for {metadata.get('settings', 'other settings')}, "
            f"not for this run's {words} (its config.json)",
            path,
        )
    identity = record.students
    if identity is not None and file_digest(path) != identity.digest:
        raise InputError(
            f"not the students this run saved (SHA-256 {file_digest(path)}…, its "
            f"config.json names {identity.digest}…)",
            path,
        )


def _student(tensors: dict[str, torch.Tensor], prefix: str, dim: int, path: Path) -> Student:
    student = Student(dim)
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        student.load_state_dict(state, strict=True)
    except RuntimeError as e:
        missing = sorted(set(student.state_dict()) - set(state))
        raise InputError(
            f"not an l2bt students file ({prefix[:-1]} student: "
            f"{'missing ' + missing[0] if missing else 'unexpected tensors'})",
            path,
        ) from e
    return student


def file_digest(path: Path) -> str:
    """The SHA-256 prefix (16 hex digits) of a file."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]
