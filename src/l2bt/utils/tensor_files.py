"""Tensors written to a safetensors file atomically, with errors that name the file.

safetensors reports a failed write (a full disk, a file size limit) as its own
`SafetensorError` holding the system's error number in its text; here it becomes the
`OSError` it was, with the path, so the command line says it in one line like any other
operating-system error.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from l2bt.utils.atomic import atomic_file

_OS_ERROR = re.compile(r"os error (\d+)")


def save_tensors(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """Write `tensors` (moved to the CPU, made contiguous) and `metadata` to `path`."""
    state = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    with atomic_file(Path(path)) as tmp:
        try:
            save_file(state, str(tmp), metadata=dict(metadata or {}))
        except SafetensorError as e:
            raise os_error(e, Path(path)) from e


def os_error(error: SafetensorError, path: Path) -> OSError:
    """The operating-system error inside a safetensors error (EIO when it names none)."""
    found = _OS_ERROR.search(str(error))
    number = int(found[1]) if found else errno.EIO
    return OSError(number, os.strerror(number) if found else str(error), str(path))
