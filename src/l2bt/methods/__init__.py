"""The methods a benchmark compares, chosen by name: `l2bt`, `l2bt@N`, `patchcore`,
`external:NAME=DIR`."""

from __future__ import annotations

import re
from pathlib import Path

from l2bt.errors import InputError
from l2bt.methods.base import Method, MethodSettings
from l2bt.methods.external import ExternalMaps
from l2bt.methods.l2bt_method import L2BTMethod

METHOD_NAMES = ("l2bt", "l2bt@N", "patchcore", "external:NAME=DIR")


def make_method(spec: str, settings: MethodSettings) -> Method | ExternalMaps:
    """A method from its name in `--methods`."""
    spec = spec.strip()
    if spec == "l2bt":
        return L2BTMethod(settings)
    if match := re.fullmatch(r"l2bt@(\d+)", spec):
        size = int(match.group(1))
        if size % 14:
            raise InputError(f"method {spec}: the input size must be a multiple of 14")
        return L2BTMethod(settings, image_size=size)
    if spec == "patchcore":
        from l2bt.methods.patchcore import PatchCore

        return PatchCore(settings)
    if match := re.fullmatch(r"external:([\w.-]+)=(.+)", spec):
        return ExternalMaps(match.group(1), Path(match.group(2)))
    raise InputError(f"unknown method {spec!r}; choose from {', '.join(METHOD_NAMES)}")


__all__ = ["METHOD_NAMES", "ExternalMaps", "Method", "MethodSettings", "make_method"]
