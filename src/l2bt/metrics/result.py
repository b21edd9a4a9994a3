"""The typed result of evaluating one category, its SPEC §6 JSON, and a readable table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from l2bt.metrics.aupro import FPR_LIMITS, ProCurve
from l2bt.metrics.regions import SIZE_BINS


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
class EvaluationResult:
    """Every metric of one category (SPEC §6), and the PRO curves for plots.

    None marks what is undefined: AUPRO and robustness without any defect region or
    without any defect-free pixel; P-AUROC without pixels of either kind; I-AUROC
    without images of either label; ratio and rho where a bin's AUPRO is None or
    AUPRO(all) is 0.
    """

    category: str
    n_images: int
    n_regions: int
    size_quantiles_px: tuple[float, float, float] | None
    i_auroc: float | None
    p_auroc: float | None
    aupro: dict[float, dict[str, float | None]]  # limit -> bin -> AUPRO
    robustness: dict[float, Robustness]  # limit -> ratio and rho
    pro_curves: dict[str, ProCurve]  # bin -> curve on FPR ∈ [0, 0.3]; not in the JSON

    def to_json_dict(self) -> dict[str, Any]:
        """Exactly the SPEC §6 JSON (limits as "0.3", "0.1", "0.05", "0.01")."""
        return {
            "category": self.category,
            "n_images": self.n_images,
            "n_regions": self.n_regions,
            "size_quantiles_px": (list(self.size_quantiles_px)
                                  if self.size_quantiles_px is not None else None),
            "i_auroc": self.i_auroc,
            "p_auroc": self.p_auroc,
            "aupro": {str(limit): dict(self.aupro[limit]) for limit in FPR_LIMITS},
            "robustness": {str(limit): {"ratio": r.ratio, "rho": r.rho}
                           for limit, r in self.robustness.items()},
        }


def _fmt(value: float | None, width: int = 7) -> str:
    return f"{'—':>{width}}" if value is None else f"{value:{width}.4f}"


def format_table(result: EvaluationResult) -> str:
    """A plain-text summary: AUPRO per FPR limit × size bin, robustness, AUROCs."""
    q = result.size_quantiles_px
    header = f"{result.category or 'maps'}: {result.n_images} images, {result.n_regions} regions"
    if q is not None:
        header += f"; region-area quartiles {q[0]:.0f} / {q[1]:.0f} / {q[2]:.0f} px"
    lines = [
        header,
        f"I-AUROC {_fmt(result.i_auroc, 0)}   P-AUROC {_fmt(result.p_auroc, 0)}",
        "",
        f"{'AUPRO to FPR':<12}" + "".join(f" {name:>7}" for name in (*SIZE_BINS, "ratio", "rho")),
    ]
    for limit in FPR_LIMITS:
        row, r = result.aupro[limit], result.robustness[limit]
        cells = [row[name] for name in SIZE_BINS] + [r.ratio, r.rho]
        lines.append(f"{f'{100 * limit:g} %':>12}" + "".join(f" {_fmt(v)}" for v in cells))
    return "\n".join(lines)
