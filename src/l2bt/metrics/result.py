"""The typed result of evaluating one category, its SPEC §6 JSON, and a readable table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from l2bt.metrics.aupro import FPR_LIMITS, PixelMetrics, ProCurve
from l2bt.metrics.regions import SIZE_BINS


@dataclass(frozen=True)
class Robustness:
    """ratio = AUPRO(q1) / AUPRO(all); rho = mean AUPRO over q1, q2, q3, all × ratio."""

    ratio: float | None
    rho: float | None


def robustness(aupro_by_bin: dict[str, float | None]) -> Robustness:
    values = [aupro_by_bin.get(name) for name in SIZE_BINS]
    smallest, overall = aupro_by_bin.get("q1"), aupro_by_bin.get("all")
    if smallest is None or overall is None or overall == 0 or any(v is None for v in values):
        return Robustness(None, None)
    ratio = smallest / overall
    mean = sum(v for v in values if v is not None) / len(values)
    return Robustness(ratio, mean * ratio)


@dataclass(frozen=True)
class EvaluationResult:
    category: str
    n_images: int
    n_regions: int
    size_quantiles_px: tuple[float, float, float] | None
    i_auroc: float | None
    p_auroc: float | None
    aupro: dict[float, dict[str, float | None]]  # limit -> bin -> AUPRO
    robustness: dict[float, Robustness]
    pro_curves: dict[str, ProCurve]

    @classmethod
    def combine(cls, category: str, n_images: int, i_auroc: float | None,
                pixels: PixelMetrics) -> EvaluationResult:
        return cls(
            category=category, n_images=n_images, n_regions=pixels.n_regions,
            size_quantiles_px=pixels.size_quantiles_px, i_auroc=i_auroc,
            p_auroc=pixels.p_auroc, aupro=pixels.aupro,
            robustness={limit: robustness(pixels.aupro[limit]) for limit in FPR_LIMITS},
            pro_curves=pixels.pro_curves,
        )

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
    quantiles = result.size_quantiles_px
    lines = [
        f"{result.category}: {result.n_images} images, {result.n_regions} defect regions"
        + (f", area quartiles {quantiles[0]:.0f} / {quantiles[1]:.0f} / {quantiles[2]:.0f} px"
           if quantiles else ""),
        f"I-AUROC {_fmt(result.i_auroc, 0)}   P-AUROC {_fmt(result.p_auroc, 0)}",
        "",
        "AUPRO   " + "".join(f"{name:>8}" for name in SIZE_BINS) + f"{'ratio':>8}{'rho':>8}",
    ]
    for limit in FPR_LIMITS:
        row = result.aupro[limit]
        r = result.robustness[limit]
        lines.append(f"@{100 * limit:>4g} % " + "".join(f" {_fmt(row[n])}" for n in SIZE_BINS)
                     + f" {_fmt(r.ratio)} {_fmt(r.rho)}")
    return "\n".join(lines)
