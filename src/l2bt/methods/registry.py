"""Making a method from its name in `--methods`."""

from __future__ import annotations

import re
from pathlib import Path

from l2bt.errors import InputError
from l2bt.methods.base import Method, MethodSettings
from l2bt.methods.external import ExternalMaps

METHOD_NAMES = ("l2bt", "l2bt@N", "patchcore", "dinomaly", "external:NAME=DIR")


def make_method(spec: str, settings: MethodSettings) -> Method | ExternalMaps:
    """A method from its name in `--methods`."""
    spec = spec.strip()
    if spec == "l2bt" or re.fullmatch(r"l2bt@(\d+)", spec):
        from l2bt.methods.l2bt_method import L2BTMethod

        if spec == "l2bt":
            return L2BTMethod(settings)
        size = int(spec.split("@")[1])
        if size % 14:
            raise InputError(f"method {spec}: the input size must be a multiple of 14")
        return L2BTMethod(settings, image_size=size)
    if spec == "patchcore":
        from l2bt.methods.patchcore import PatchCore

        return PatchCore(settings)
    if spec == "dinomaly":
        from l2bt.methods.dinomaly import Dinomaly

        return Dinomaly(settings)
    if match := re.fullmatch(r"external:([\w.-]+)=(.+)", spec):
        return ExternalMaps(match.group(1), Path(match.group(2)))
    raise InputError(f"unknown method {spec!r}; choose from {', '.join(METHOD_NAMES)}")
