"""Thresholds with a stated false-alarm rate, from defect-free calibration images only.

Split conformal prediction. Let s₁ ≤ … ≤ sₙ be the scores of n defect-free calibration
images the model never trained on, and S the score of a new defect-free image. If the
n + 1 scores are exchangeable, the rank of S is uniform, so for k = ⌈(n + 1)(1 − α)⌉ ≤ n

    P(S > s_k) ≤ 1 − k / (n + 1) ≤ α,

whatever the distribution of the scores (ties only lower the probability). The image
threshold is s_k; a part is defective when its score is above it. When k > n (too few
images for α) the largest score is used and the guaranteed rate, 1/(n + 1), is stored and
printed instead of α. The pixel threshold applies the same rule to the calibration maps'
maxima: a defect-free image then shows any defect pixel with probability ≤ α. The
guarantee is marginal (over calibration sets) and holds while new images come from the
calibration distribution: `l2bt calibrate` recomputes the thresholds after a camera or
lighting change, without retraining.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from fractions import Fraction
from typing import Any

from l2bt.decisions.cleanup import Cleanup
from l2bt.decisions.risk import SegmentationThreshold
from l2bt.errors import InputError
from l2bt.utils.typed_dict import typed_fields


@dataclass(frozen=True)
class ConformalThreshold:
    """The k-th smallest of n calibration scores and the false-alarm rate it guarantees."""

    value: float
    rank: int  # k, 1-based; n when n was too small for the asked rate
    guaranteed_rate: float


def check_false_alarm_rate(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise InputError(f"--false-alarm-rate must be in (0, 1), got {alpha}")


def conformal_threshold(scores: Sequence[float], alpha: float) -> ConformalThreshold:
    """The split-conformal threshold at false-alarm rate `alpha` (see the module docstring).

    k is computed in exact rational arithmetic from α's decimal form, so that, e.g.,
    n = 99 and α = 0.01 give k = 99 and not 100 through rounding.
    """
    check_false_alarm_rate(alpha)
    n = len(scores)
    if n == 0:
        raise InputError("no calibration images: thresholds need at least one")
    ordered = sorted(float(s) for s in scores)
    k = math.ceil((n + 1) * (1 - Fraction(repr(float(alpha)))))
    if k > n:
        return ConformalThreshold(ordered[-1], n, 1.0 / (n + 1))
    return ConformalThreshold(ordered[k - 1], k, float(alpha))


@dataclass(frozen=True)
class Thresholds:
    """What a run folder's `config.json` holds under "thresholds" (SPEC §7).

    `image`: a part is defective when its score is above it; `pixel`: a pixel belongs to
    the predicted mask when its map value is above it, unless `segmentation` (risk
    control at β, `decisions.risk`) is set, which masks then use; `cleanup` runs on every
    mask before its regions are counted. `false_alarm_rate` is the α asked
    for, `guaranteed_rate` what the calibration set can guarantee (α, or 1/(n + 1)).
    """

    image: float
    pixel: float
    false_alarm_rate: float
    guaranteed_rate: float
    n_calibration: int
    calibration_images: tuple[str, ...]
    segmentation: float | None = None  # risk-controlled mask threshold (SPEC §7), if asked
    pixel_false_alarm_rate: float | None = None  # β asked for
    attainable_pixel_rate: float | None = None  # the expected flagged fraction that holds
    cleanup: Cleanup = field(default_factory=Cleanup)  # runs on every mask before its regions
    image_scores: tuple[float, ...] | None = None  # the calibration images' scores, in order

    @property
    def mask_threshold(self) -> float:
        """What masks use: the segmentation threshold when set, else the pixel threshold."""
        return self.pixel if self.segmentation is None else self.segmentation

    def with_segmentation(self, found: SegmentationThreshold) -> Thresholds:
        return replace(
            self,
            segmentation=found.threshold,
            pixel_false_alarm_rate=found.beta,
            attainable_pixel_rate=found.attainable_rate,
        )

    def to_dict(self) -> dict[str, Any]:
        described = asdict(self)
        described["calibration_images"] = list(self.calibration_images)
        if self.image_scores is not None:
            described["image_scores"] = list(self.image_scores)
        described["cleanup"] = self.cleanup.to_dict()
        return described

    @classmethod
    def from_dict(cls, data: object, key: str = "thresholds") -> Thresholds:
        """From JSON a person may have edited: finite thresholds, rates in (0, 1], at least
        one calibration image, a valid clean-up; each problem names its key
        (`thresholds.image`). Fields added later (the segmentation threshold, the clean-up)
        may be missing: older runs load with their defaults."""
        values = typed_fields(cls, data, key)
        required = [
            f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
        ]
        missing = [name for name in required if name not in values]
        if missing:
            raise InputError(f"{key}.{missing[0]} is missing")
        for name in RATES:
            if values.get(name) is not None and not 0 < values[name] <= 1:
                raise InputError(f"{key}.{name} must be in (0, 1], got {values[name]!r}")
        if values["n_calibration"] < 1:
            raise InputError(f"{key}.n_calibration must be ≥ 1, got {values['n_calibration']}")
        for name in FLOATS:
            if values.get(name) is not None:
                values[name] = float(values[name])
        if "cleanup" in values:
            values["cleanup"] = _cleanup(values["cleanup"], f"{key}.cleanup")
        scores = values.get("image_scores")
        if scores is not None and len(scores) != values["n_calibration"]:
            raise InputError(
                f"{key}.image_scores holds {len(scores)} scores for "
                f"{values['n_calibration']} calibration images"
            )
        return cls(**values)

    def summary(self) -> str:
        """One line for people: the thresholds and the rate they guarantee."""
        rate = f"{self.guaranteed_rate:.3g}"
        if self.guaranteed_rate > self.false_alarm_rate:
            rate += (
                f" (not the asked {self.false_alarm_rate:g}: {self.n_calibration} "
                f"calibration images guarantee no less than 1/(n+1))"
            )
        line = (
            f"thresholds from {self.n_calibration} calibration images: image "
            f"{self.image:.6g}, pixel {self.pixel:.6g}; guaranteed false-alarm rate {rate}"
        )
        if self.segmentation is not None:
            line += (
                f"; masks at the segmentation threshold {self.segmentation:.6g} (expected "
                f"fraction of a good part's pixels flagged <= {self.attainable_pixel_rate:.3g}"
            )
            if self.attainable_pixel_rate != self.pixel_false_alarm_rate:
                line += f", not the asked {self.pixel_false_alarm_rate:g}: too few images"
            line += ")"
        return line


RATES = ("false_alarm_rate", "guaranteed_rate", "pixel_false_alarm_rate", "attainable_pixel_rate")
FLOATS = ("image", "pixel", "segmentation", *RATES)


def _cleanup(data: object, key: str) -> Cleanup:
    if not isinstance(data, dict):
        raise InputError(f"{key} must be an object, got {data!r}")
    try:
        return Cleanup.from_dict(data)
    except InputError as e:
        raise InputError(f"{key}: {e.problem.removeprefix('cleanup: ')}") from e


def thresholds_from_scores(
    image_scores: Sequence[float], map_maxima: Sequence[float], alpha: float, images: Sequence[str]
) -> Thresholds:
    """Image and pixel thresholds from calibration images' scores and map maxima."""
    if not len(image_scores) == len(map_maxima) == len(images):
        raise ValueError("one score, one map maximum and one name per calibration image")
    image = conformal_threshold(image_scores, alpha)
    pixel = conformal_threshold(map_maxima, alpha)
    return Thresholds(
        image=image.value,
        pixel=pixel.value,
        false_alarm_rate=float(alpha),
        guaranteed_rate=max(image.guaranteed_rate, pixel.guaranteed_rate),
        n_calibration=len(images),
        calibration_images=tuple(images),
        image_scores=tuple(float(s) for s in image_scores),
    )
