"""Maps made by another tool, evaluated in the same table: `external:NAME=DIR`.

DIR holds `<category>/<key>.tiff` (SPEC §5) and optionally `<category>/scores.csv`;
nothing is fitted or predicted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from l2bt.errors import InputError


class ExternalMaps:
    uses_teacher = False  # nothing is fitted or predicted here

    def __init__(self, name: str, maps_dir: Path) -> None:
        if not maps_dir.is_dir():
            raise InputError("external maps folder not found", maps_dir)
        self.name = name
        self.maps_dir = maps_dir

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, "external_maps": str(self.maps_dir.resolve())}
