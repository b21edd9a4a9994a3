"""What a benchmarked method learned, kept under its work folder and reused on resume.

A method's artefact is a safetensors file and a `config.json`, both carrying one key: a
digest of everything the artefact depends on (format, settings, the teacher's weights,
the exact training files). Each is written atomically, tensors first; the key sits in
both, so files from different runs (one killed between the two writes) never pass as a
pair, and a reload happens only when the key matches. Unreadable or foreign files are
not an error: the method fits again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from l2bt.run import CONFIG_FILE
from l2bt.utils.atomic import write_text_atomic
from l2bt.utils.tensor_files import save_tensors


@dataclass(frozen=True)
class Artefact:
    tensors: dict[str, torch.Tensor]
    described: dict[str, Any]  # the config.json, "format" and "key" included


def save_artefact(
    work_dir: Path,
    tensors_file: str,
    tensors: dict[str, torch.Tensor],
    format_tag: str,
    key: str,
    description: dict[str, Any],
) -> None:
    """Tensors, then `config.json` (`description` with the format and key)."""
    save_tensors(work_dir / tensors_file, tensors, {"key": key})
    config = {"format": format_tag, "key": key, **description}
    write_text_atomic(work_dir / CONFIG_FILE, json.dumps(config, indent=2) + "\n")


def load_artefact(work_dir: Path, tensors_file: str, format_tag: str, key: str) -> Artefact | None:
    """The artefact in `work_dir` if it was made with `key`; None otherwise."""
    config_path, tensors_path = work_dir / CONFIG_FILE, work_dir / tensors_file
    if not (config_path.is_file() and tensors_path.is_file()):
        return None
    try:
        described = json.loads(config_path.read_text())
        if described.get("format") != format_tag or described.get("key") != key:
            return None
        with safe_open(str(tensors_path), framework="pt") as f:
            if (f.metadata() or {}).get("key") != key:
                return None
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except Exception:  # unreadable or foreign files: fit again rather than fail
        return None
    return Artefact(tensors, described)
