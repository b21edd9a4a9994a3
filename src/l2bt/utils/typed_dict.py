"""Reading a frozen dataclass from JSON that a person may have edited.

`typed_fields(cls, data, key)` checks every key of `data` against the dataclass's
fields and their annotated types (int, float, str, None, unions and tuples of these)
before anything is built: an int field given 112.0 or "x", a float given NaN or
Infinity, an unknown key, each is refused with one line naming `key.field`. Missing
fields keep their defaults, so files written before a field existed still load.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import fields
from typing import Any, Union

from l2bt.errors import InputError


def typed_fields(cls: type, data: object, key: str) -> dict[str, Any]:
    """`data` as keyword arguments for the dataclass `cls` (lists become tuples)."""
    if not isinstance(data, dict):
        raise InputError(f"{key} must be an object, got {data!r}")
    hints = typing.get_type_hints(cls)
    declared = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(declared))
    if unknown:
        raise InputError(f"{key}.{unknown[0]} is not a known setting")
    values: dict[str, Any] = {}
    for name, value in data.items():
        if not conforms(value, hints[name]):
            raise InputError(f"{key}.{name} must be {declared[name].type}, got {value!r}")
        values[name] = tuple(value) if isinstance(value, list) else value
    return values


def conforms(value: object, hint: Any) -> bool:
    """Whether a JSON value fits a type annotation; floats must be finite, bools are no
    numbers; annotations this does not know are left to the dataclass to judge."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(conforms(value, arg) for arg in typing.get_args(hint))
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(conforms(v, args[0]) for v in value)
        return len(value) == len(args) and all(map(conforms, value, args))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return number and math.isfinite(typing.cast(float, value))
    if hint is str:
        return isinstance(value, str)
    return True
