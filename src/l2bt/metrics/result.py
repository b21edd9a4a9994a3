"""The typed result of evaluating one category, its SPEC §6 JSON, and a readable table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from l2bt.metrics.aupimo import FPR_BOUNDS, Aupimo
from l2bt.metrics.aupro import FPR_LIMITS, AuproTable, ProCurve
from l2bt.metrics.precision_recall import ImageDecisions
from l2bt.metrics.size_bins import ABSOLUTE_BINS, SIZE_BINS


@dataclass(frozen=True)
class Robustness:
    """ratio = AUPRO(q1) / AUPRO(all); rho = mean AUPRO over q1, q2, q3, all × ratio."""

    ratio: float | None
    rho: float | None


def robustness(aupro_by_bin: dict[str, float | None]) -> Robustness:
    """The size-robustness figures of one FPR limit from its AUPRO per bin."""
    values = [aupro_by_bin.get(name) for name in SIZE_BINS]
    smallest, overall = aupro_by_bin.get("q1"), aupro_by_bin.get("all")
    if smallest is None or overall is None or overall == 0 or any(v is None for v in values):
        return Robustness(None, None)
    ratio = float(smallest / overall)
    mean = sum(v for v in values if v is not None) / len(values)
    return Robustness(ratio, float(mean * ratio))


@dataclass(frozen=True)
class Oracle:
    """Best F1 over every threshold, using the test labels (reported, never used to set
    a threshold). None without an anomalous image / a defect pixel."""

    image_f1_max: float | None
    pixel_f1_max: float | None


@dataclass(frozen=True)
class Decisions:
    """Figures of decisions already made: image verdicts and predicted masks."""

    image: ImageDecisions
    seg_f1: float | None  # pixel F1 over every pixel of every image; None: nothing either way


@dataclass(frozen=True)
class LowResolution:
    """The same maps scored as low-resolution benchmarks do (`l2bt.metrics.low_res`)."""

    size: int
    p_auroc: float | None
    aupro: AuproTable


@dataclass(frozen=True)
class EvaluationResult:
    """Every metric of one category (SPEC §6, §7), and the PRO curves for plots.

    None marks what is undefined: AUPRO and robustness without any defect region or
    without any defect-free pixel; an AUPRO bin without regions; P-AUROC without pixels
    of either kind; P-AP and pixel F1-max without defect pixels; I-AUROC without images
    of either label; ratio and rho where a bin's AUPRO is None or AUPRO(all) is 0.
    `decisions` is None unless every image came with a verdict and a predicted mask;
    `low_res` unless the low-resolution protocol was asked for.
    """

    category: str
    n_images: int
    n_regions: int
    size_quantiles_px: tuple[float, float, float] | None
    i_auroc: float | None
    p_auroc: float | None
    aupro: AuproTable  # limit -> quartile bin -> AUPRO
    robustness: dict[float, Robustness]  # limit -> ratio and rho
    pro_curves: dict[str, ProCurve]  # bin -> curve on FPR ∈ [0, 0.3]; not in the JSON
    p_ap: float | None
    aupro_abs: AuproTable  # limit -> absolute bin ("<=64", …, "all") -> AUPRO
    aupimo: Aupimo
    oracle: Oracle
    decisions: Decisions | None = None
    low_res: LowResolution | None = None
    seg_f1_at: dict[str, float | None] = field(default_factory=dict)  # mask rule -> SegF1

    def to_json_dict(self) -> dict[str, Any]:
        """The SPEC §6 JSON (limits as "0.3", "0.1", "0.05", "0.01"), with the further
        figures; "decisions" and "low_res_protocol" only when present."""
        data: dict[str, Any] = {
            "category": self.category,
            "n_images": self.n_images,
            "n_regions": self.n_regions,
            "size_quantiles_px": (
                list(self.size_quantiles_px) if self.size_quantiles_px is not None else None
            ),
            "i_auroc": self.i_auroc,
            "p_auroc": self.p_auroc,
            "aupro": _aupro_json(self.aupro),
            "robustness": {
                str(limit): {"ratio": r.ratio, "rho": r.rho} for limit, r in self.robustness.items()
            },
            "p_ap": self.p_ap,
            "aupro_abs": _aupro_json(self.aupro_abs),
            "aupimo": {"mean": self.aupimo.mean, "per_image": dict(self.aupimo.per_image)},
            "oracle": {
                "image_f1_max": self.oracle.image_f1_max,
                "pixel_f1_max": self.oracle.pixel_f1_max,
            },
        }
        if self.decisions is not None:
            image = self.decisions.image
            data["decisions"] = {
                "image": {
                    "precision": image.precision,
                    "recall": image.recall,
                    "f1": image.f1,
                    "false_alarm_rate": image.false_alarm_rate,
                },
                "seg_f1": self.decisions.seg_f1,
            }
        if self.seg_f1_at:
            data["seg_f1_at"] = dict(self.seg_f1_at)
        if self.low_res is not None:
            data["low_res_protocol"] = {
                "size": self.low_res.size,
                "p_auroc": self.low_res.p_auroc,
                "aupro": _aupro_json(self.low_res.aupro),
            }
        return data


def _aupro_json(table: AuproTable) -> dict[str, dict[str, float | None]]:
    return {str(limit): dict(table[limit]) for limit in FPR_LIMITS}


def _fmt(value: float | None, width: int = 7) -> str:
    return f"{'—':>{width}}" if value is None else f"{value:{width}.4f}"


def format_table(result: EvaluationResult) -> str:
    """A plain-text summary: AUPRO per FPR limit × size bin (quartile and absolute),
    robustness, AUROCs, P-AP, AUPIMO, F1, decisions and the low-resolution protocol."""
    q = result.size_quantiles_px
    header = f"{result.category or 'maps'}: {result.n_images} images, {result.n_regions} regions"
    if q is not None:
        header += f"; region-area quartiles {q[0]:.0f} / {q[1]:.0f} / {q[2]:.0f} px"
    low, high = FPR_BOUNDS
    lines = [
        header,
        f"I-AUROC {_fmt(result.i_auroc, 0)}   P-AUROC {_fmt(result.p_auroc, 0)}   "
        f"P-AP {_fmt(result.p_ap, 0)}   AUPIMO (FPR {_power(low)}–{_power(high)}) "
        f"{_fmt(result.aupimo.mean, 0)} over {len(result.aupimo.per_image)} images",
        f"oracle F1-max (test labels): image {_fmt(result.oracle.image_f1_max, 0)}   "
        f"pixel {_fmt(result.oracle.pixel_f1_max, 0)}",
    ]
    if result.decisions is not None:
        image = result.decisions.image
        lines.append(
            f"decisions: image precision {_fmt(image.precision, 0)} recall "
            f"{_fmt(image.recall, 0)} F1 {_fmt(image.f1, 0)} false alarms "
            f"{_fmt(image.false_alarm_rate, 0)}   SegF1 {_fmt(result.decisions.seg_f1, 0)}"
        )
    if result.seg_f1_at:
        lines.append(
            "SegF1 at the stored thresholds: "
            + "   ".join(f"{name} {_fmt(f1, 0)}" for name, f1 in result.seg_f1_at.items())
        )
    lines += ["", _aupro_rows("AUPRO to FPR", result.aupro, SIZE_BINS, result.robustness)]
    lines += ["", _aupro_rows("by area (px)", result.aupro_abs, ABSOLUTE_BINS)]
    if result.low_res is not None:
        lines += [
            "",
            _aupro_rows(
                f"{result.low_res.size}x{result.low_res.size} maps", result.low_res.aupro, SIZE_BINS
            ),
            f"{'':>12} P-AUROC {_fmt(result.low_res.p_auroc, 0)} (low-resolution "
            "protocol: map bilinear, mask nearest)",
        ]
    return "\n".join(lines)


def _power(value: float) -> str:
    """1e-05 -> "1e-5"."""
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _aupro_rows(
    title: str,
    table: AuproTable,
    bins: tuple[str, ...],
    robust: dict[float, Robustness] | None = None,
) -> str:
    extra = ("ratio", "rho") if robust is not None else ()
    rows = [f"{title:<12}" + "".join(f" {name:>7}" for name in (*bins, *extra))]
    for limit in FPR_LIMITS:
        cells = [table[limit][name] for name in bins]
        if robust is not None:
            cells += [robust[limit].ratio, robust[limit].rho]
        rows.append(f"{f'{100 * limit:g} %':>12}" + "".join(f" {_fmt(v)}" for v in cells))
    return "\n".join(rows)
