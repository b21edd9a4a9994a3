"""The two tables of a maps folder (SPEC §5, §7): `scores.csv` and `regions.csv`.

`scores.csv` holds `key,score` and, with thresholds, `verdict` (good | defective);
`read_score_table` is its one reader (any tool's file: a BOM, extra columns; every score
finite, every verdict known, each problem one line naming the file and the line).
`regions.csv` holds one row per predicted region, x1 and y1 exclusive. Writers are atomic.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from l2bt.errors import InputError
from l2bt.prediction import Region
from l2bt.utils.atomic import write_text_atomic

SCORES_FILE = "scores.csv"
REGIONS_FILE = "regions.csv"
REGION_COLUMNS = ("key", "region", "area_px", "x0", "y0", "x1", "y1", "max_score", "mean_score")
VERDICTS = {"good": False, "defective": True}


@dataclass(frozen=True)
class ScoreRow:
    """One line of `scores.csv`."""

    key: str
    score: float
    verdict: str | None


@dataclass(frozen=True)
class ScoreTable:
    """`scores.csv`: a score per key, and a verdict per key (True: defective) when the
    file has a `verdict` column."""

    scores: dict[str, float]
    verdicts: dict[str, bool] | None

    def rows(self) -> list[ScoreRow]:
        """Every line, in file order."""
        verdicts = self.verdicts or {}
        names = {True: "defective", False: "good"}
        return [
            ScoreRow(key, score, names[verdicts[key]] if key in verdicts else None)
            for key, score in self.scores.items()
        ]


def write_scores(
    path: Path, scores: Mapping[str, float], verdicts: Mapping[str, str] | None = None
) -> None:
    """`scores.csv` with header `key,score` (+ `verdict`), the format `l2bt evaluate` reads."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["key", "score"] + (["verdict"] if verdicts else []))
    for key, score in scores.items():
        writer.writerow([key, repr(float(score))] + ([verdicts[key]] if verdicts else []))
    write_text_atomic(path, buffer.getvalue())


def write_regions(path: Path, regions: Mapping[str, Sequence[Region]]) -> None:
    """`regions.csv`: one row per predicted region (SPEC §7), x1 and y1 exclusive."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(REGION_COLUMNS)
    for key, found in regions.items():
        for r in found:
            integers = [r.region, r.area_px, r.x0, r.y0, r.x1, r.y1]
            writer.writerow([key, *integers, repr(r.max_score), repr(r.mean_score)])
    write_text_atomic(path, buffer.getvalue())


def read_score_table(path: Path, keys: Sequence[str] = ()) -> ScoreTable | None:
    """`scores.csv` (`key,score`, optionally `verdict`: good | defective on every line),
    checked to cover `keys`; None if absent."""
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8-sig")  # with or without a BOM (Excel's)
    except UnicodeDecodeError as e:
        raise InputError(f"not a UTF-8 text file (byte {e.start}: {e.reason})", path) from e
    if "\0" in text:
        raise InputError("not a text file (holds NUL bytes)", path)
    table = _parse_scores(text, path)
    missing = [k for k in keys if k not in table.scores]
    if missing:
        raise InputError(
            f"no score for {missing[0]}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
            path,
        )
    return table


def _parse_scores(text: str, path: Path) -> ScoreTable:
    scores: dict[str, float] = {}
    verdicts: dict[str, bool] = {}
    with io.StringIO(text, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"key", "score"} <= set(reader.fieldnames):
            raise InputError("scores file needs the columns key,score", path)
        has_verdicts = "verdict" in reader.fieldnames
        for line, row in enumerate(reader, start=2):
            scores[row["key"]] = _score(row["score"], line, path)
            if has_verdicts:
                if row["verdict"] not in VERDICTS:
                    raise InputError(
                        f"line {line}: verdict {row['verdict']!r} is neither "
                        "'good' nor 'defective'",
                        path,
                    )
                verdicts[row["key"]] = VERDICTS[row["verdict"]]
    return ScoreTable(scores, verdicts if has_verdicts else None)


def _score(text: str, line: int, path: Path) -> float:
    try:
        score = float(text)
    except (TypeError, ValueError) as e:
        raise InputError(f"line {line}: score {text!r} is not a number", path) from e
    if not math.isfinite(score):
        raise InputError(f"line {line}: score {text!r} is not finite", path)
    return score


def read_regions(path: Path) -> dict[str, tuple[Region, ...]]:
    """`regions.csv`'s regions by key; empty when the file is absent (no thresholds)."""
    if not Path(path).is_file():
        return {}
    found: dict[str, list[Region]] = {}
    with open(path, newline="") as f:
        try:
            for r in csv.DictReader(f):
                integers = (int(r[column]) for column in REGION_COLUMNS[1:7])
                scores = (float(r[column]) for column in REGION_COLUMNS[7:])
                found.setdefault(r["key"], []).append(Region(*integers, *scores))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"unreadable row ({e})", path) from e
    return {key: tuple(regions) for key, regions in found.items()}
