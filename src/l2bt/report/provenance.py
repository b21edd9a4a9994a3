"""What made a set of figures: the lines results.md and `l2bt evaluate` open with.

A `Provenance` is read from a benchmark's `benchmark.json` or from a run's record
(`l2bt.run`: a run folder's, or the one in the `run.json` predict leaves beside its
maps). Random teacher weights always add a warning line: such scores say nothing about
anomaly detection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from l2bt.maps.layout import MapsRecord
from l2bt.run import RunDescription

RANDOM_WARNING = (
    "**Warning: the teacher has random weights; these scores mean nothing** "
    "(a smoke test of the pipeline, not a measurement)."
)
UNKNOWN_MODEL = "Maps from an unknown model (no run.json beside them): provenance not recorded."


@dataclass(frozen=True)
class Provenance:
    teacher: str | None
    weights_id: str | None  # "random", a checkpoint's SHA-256 prefix, or None: unknown
    image_size: int | None
    input_mode: str | None
    epochs: int | str | None
    precision: str | None
    calibration: str  # in words

    def lines(self) -> list[str]:
        """Markdown bullet lines, with the warning when the weights are random."""
        lines = [
            f"- teacher: {self.teacher or 'unknown'}, weights: {_weights(self.weights_id)}",
            f"- input: {self.image_size or 'unknown'} px, mode {self.input_mode or 'unknown'}",
            f"- epochs: {_or_unknown(self.epochs)}, precision: {self.precision or 'unknown'}",
            f"- calibration: {self.calibration}",
        ]
        return [RANDOM_WARNING, "", *lines] if self.weights_id == "random" else lines


def _weights(weights_id: str | None) -> str:
    if weights_id is None:
        return "unknown"
    return "**random**" if weights_id == "random" else f"checkpoint sha256 {weights_id}…"


def _or_unknown(value: Any) -> str:
    return "unknown" if value is None else str(value)


def from_benchmark(described: dict[str, Any]) -> Provenance:
    """From a benchmark.json (its settings and the teacher's recorded weights id)."""
    settings = described.get("settings") or {}
    teacher = settings.get("teacher") or {}
    choice = described.get("calibration")
    where = "the default share of the training images" if choice is None else f"{choice!r}"
    rate = (described.get("decisions") or {}).get("false_alarm_rate")
    calibration = (
        "none (--calibration 0)" if choice in ("0", "0.0") else f"{where}, false-alarm rate {rate}"
    )
    return Provenance(
        teacher.get("variant"),
        described.get("teacher_weights_id"),
        teacher.get("image_size"),
        teacher.get("input_mode"),
        settings.get("epochs") or "each method's own (l2bt 50; anomalib models their authors')",
        settings.get("precision"),
        calibration,
    )


def from_run(record: RunDescription) -> Provenance:
    """From a run's record (a run folder's, an exported file's, or predict's run.json)."""
    thresholds = record.thresholds
    calibration = (
        "none (no thresholds)"
        if thresholds is None
        else f"{thresholds.n_calibration} defect-free images, "
        f"false-alarm rate {thresholds.false_alarm_rate}"
    )
    teacher = record.teacher
    return Provenance(
        None if teacher is None else teacher.variant,
        record.weights_id,
        None if teacher is None else teacher.image_size,
        None if teacher is None else teacher.input_mode,
        None if record.train is None else record.train.epochs,
        record.precision,
        calibration,
    )


def maps_lines(made_by: MapsRecord | None) -> list[str]:
    """What `l2bt evaluate` prints above its table for a maps folder."""
    if made_by is None:
        return [UNKNOWN_MODEL]
    return [f"Maps made by {made_by.model or 'an l2bt model'}:", *from_run(made_by.record).lines()]
