"""Problems found in a data tree: raised at once, or collected to report them all."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from l2bt.errors import InputError


@dataclass(frozen=True)
class DataProblem:
    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


class Problems:
    """Where loaders report problems: `strict` raises the first, otherwise all are kept."""

    def __init__(self, strict: bool = True) -> None:
        self.strict = strict
        self.found: list[DataProblem] = []

    def report(self, problem: str, path: str | Path) -> None:
        if self.strict:
            raise InputError(problem, path)
        self.found.append(DataProblem(str(path), problem))
