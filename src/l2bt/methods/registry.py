"""Making a method from its name in `--methods`.

A name is a base method (`l2bt`, `l2bt@N`, `patchcore`, `dinomaly`) optionally followed
by an input-mode suffix (`+pad`, `+aspect`, `+tiles`, SPEC §11) that sets that method's
input mode against the run's; its results are filed under the whole name. External maps
(`external:NAME=DIR`) take no suffix: their maps are made elsewhere. anomalib's models
(`anomalib:NAME[@N][+tiles]`, SPEC §12) take `+tiles` only: their own input is a square.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import cast

from l2bt.config import InputMode
from l2bt.errors import InputError
from l2bt.methods.base import Method, MethodSettings
from l2bt.methods.external import ExternalMaps
from l2bt.methods.zoo import ZooModel, zoo_model

METHOD_NAMES = (
    "l2bt",
    "l2bt@N",
    "patchcore",
    "dinomaly",
    "anomalib:NAME[@N][+tiles]",
    "external:NAME=DIR",
)
INPUT_MODE_SUFFIXES = ("+pad", "+aspect", "+tiles")  # SPEC §9, §11 (l2bt.preprocess.INPUT_MODES)


def make_method(spec: str, settings: MethodSettings) -> Method | ExternalMaps:
    """A method from its name in `--methods` (with its input-mode suffix, if any)."""
    spec = spec.strip()
    if match := re.fullmatch(r"external:([\w.-]+)=(.+)", spec):
        return ExternalMaps(match.group(1), Path(match.group(2)))
    if spec.startswith("anomalib:"):
        return _zoo_method(spec, settings)
    base, plus, mode = spec.rpartition("+")
    if not plus:
        return _base_method(spec, settings)
    if plus + mode not in INPUT_MODE_SUFFIXES:
        raise InputError(
            f"method {spec}: unknown input mode +{mode}; use {', '.join(INPUT_MODE_SUFFIXES)}"
        )
    teacher = dataclasses.replace(settings.teacher, input_mode=cast(InputMode, mode))
    method = _base_method(base, dataclasses.replace(settings, teacher=teacher))
    method.name = spec
    return method


def _base_method(spec: str, settings: MethodSettings) -> Method:
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
    raise InputError(
        f"unknown method {spec!r}; choose from {', '.join(METHOD_NAMES)}, "
        f"optionally followed by {', '.join(INPUT_MODE_SUFFIXES)}"
    )


def parse_zoo_name(spec: str) -> tuple[ZooModel, int | None, bool]:
    """`anomalib:NAME[@N][+tiles]` -> (the model's row, N or None, tiles?); no torch."""
    match = re.fullmatch(r"anomalib:(\w+)(?:@(\d+))?(\+\w+)?", spec)
    if match is None:
        raise InputError(f"method {spec}: write anomalib:NAME, anomalib:NAME@N or +tiles")
    name, size, suffix = match.groups()
    if suffix not in (None, "+tiles"):
        raise InputError(f"method {spec}: anomalib models take +tiles only, not {suffix}")
    model = zoo_model(name)
    if size is not None and int(size) < model.min_size:
        raise InputError(f"method {spec}: the input size must be at least {model.min_size} px")
    return model, None if size is None else int(size), suffix == "+tiles"


def _zoo_method(spec: str, settings: MethodSettings) -> Method:
    """`anomalib:NAME[@N][+tiles]`: anomalib's model NAME at N px (default its own)."""
    from l2bt.methods.zoo.adapter import ZooMethod

    model, size, tiles = parse_zoo_name(spec)
    return ZooMethod(spec, model, settings, size, tiles)
