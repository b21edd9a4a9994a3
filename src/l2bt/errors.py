"""The one exception type for bad input.

Anything a user can cause (a missing folder, an unreadable image, a mask of the wrong
size, a checkpoint of the wrong kind) raises `InputError`. The CLI prints it as one
plain line and exits non-zero; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad input, described in one line that names the offending file when there is one."""

    def __init__(self, problem: str, path: str | Path | None = None) -> None:
        self.problem = problem
        self.path = None if path is None else str(path)
        super().__init__(problem if path is None else f"{path}: {problem}")
