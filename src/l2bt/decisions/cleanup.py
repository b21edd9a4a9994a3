"""Clean-up of a defect mask: close small gaps, fill holes, drop specks (SPEC §7).

`Cleanup.apply` runs three steps on a bool (H, W) mask, each skipped at its default:

1. Closing by a disc of radius r (the offsets with dy² + dx² ≤ r²): dilation, then erosion.
   The mask is taken to lie in an unbounded plane of background, closed there and cropped
   back; padding by r makes this exact, since neither step looks further than r. So the
   closing only adds pixels, and a defect touching the image border is not shaved by it.
2. Hole filling: background pixels not 4-connected to the image border become foreground
   (foreground 8-connected, background 4-connected: the dual pair, so a diagonal chain of
   pixels encloses what it surrounds).
3. Removal of the 8-connected regions of fewer than A pixels.

Each step is increasing (mask ⊆ mask' implies step(mask) ⊆ step(mask')), hence so is the
whole: a pixel kept at a map threshold stays kept at every lower threshold, which is what
risk control (`risk.py`) needs. The output is a new bool array of the input's H × W, and an
empty mask stays empty. Cost: O(H·W·r²) for the closing, O(H·W) for the rest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from l2bt.errors import InputError
from l2bt.metrics.size_bins import EIGHT_CONNECTED


@dataclass(frozen=True)
class Cleanup:
    """Clean-up settings; the defaults change nothing."""

    min_region_area: int = 0  # A: regions of fewer pixels are dropped
    close_radius: int = 0  # r: closing by a disc of this radius
    fill_holes: bool = False

    def __post_init__(self) -> None:
        for name in ("min_region_area", "close_radius"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise InputError(f"cleanup: {name} must be a non-negative integer, got {value!r}")
        if not isinstance(self.fill_holes, bool | np.bool_):
            raise InputError(f"cleanup: fill_holes must be true or false, got {self.fill_holes!r}")

    @property
    def is_identity(self) -> bool:
        """Whether `apply` returns every mask unchanged."""
        return self.min_region_area <= 1 and self.close_radius == 0 and not self.fill_holes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cleanup:
        """Settings from `config.json`; missing keys take their defaults, others are refused."""
        known = {field.name for field in fields(cls)}
        for key in data:
            if key not in known:
                raise InputError(f"cleanup: unknown setting {key!r} (known: {sorted(known)})")
        return cls(**data)

    def apply(self, mask: np.ndarray) -> np.ndarray:
        """The cleaned (H, W) bool mask (a new array; see the module docstring)."""
        cleaned = np.array(mask, dtype=bool)
        if cleaned.ndim != 2:
            raise ValueError(f"a mask is (H, W), got shape {cleaned.shape}")
        if self.close_radius > 0:
            cleaned = close_with_disc(cleaned, int(self.close_radius))
        if self.fill_holes:
            cleaned = fill_holes(cleaned)
        if self.min_region_area > 1:
            cleaned = remove_small_regions(cleaned, int(self.min_region_area))
        return cleaned


def disc(radius: int) -> np.ndarray:
    """(2r + 1, 2r + 1) bool: the offsets (dy, dx) with dy² + dx² ≤ r²."""
    dy, dx = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return dy * dy + dx * dx <= radius * radius


def close_with_disc(mask: np.ndarray, radius: int) -> np.ndarray:
    """Closing by a disc in the plane of background around the (H, W) mask, cropped back."""
    from scipy import ndimage

    structure = disc(radius)
    padded = np.pad(mask, radius)  # (H + 2r, W + 2r), background around the mask
    dilated = ndimage.binary_dilation(padded, structure)
    closed = ndimage.binary_erosion(dilated, structure)
    return closed[radius:-radius, radius:-radius]  # (H, W)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask plus its holes: background 4-components that do not touch the border."""
    from scipy import ndimage

    background, count = ndimage.label(~mask)  # scipy's default structure: 4-connected
    rim = np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
    is_hole = np.ones(count + 1, dtype=bool)
    is_hole[rim] = False
    is_hole[0] = False  # label 0: the foreground
    return mask | is_hole[background]


def remove_small_regions(mask: np.ndarray, min_area: int) -> np.ndarray:
    """The mask without its 8-connected regions of fewer than `min_area` pixels."""
    from scipy import ndimage

    regions, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
    areas = np.bincount(regions.ravel(), minlength=count + 1)
    keep = areas >= min_area
    keep[0] = False  # label 0: the background
    return keep[regions]
