"""Reading a frozen dataclass from JSON that a person may have edited.

`typed_fields(cls, data, key)` checks every key of `data` against the dataclass's
fields and their annotated types (int, float, str, None, unions and tuples of these)
before anything is built: an int field given 112.0 or "x", a float given NaN or
Infinity, an unknown key, a required field missing, each is refused with one line naming
`key.field`. Other missing fields keep their defaults, so files written before a field
existed still load. `built(cls, values, key)` builds the dataclass, its own checks'
problems named the same way.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Collection
from dataclasses import MISSING, fields
from typing import Any, Union

from l2bt.errors import InputError


def typed_fields(
    cls: type, data: object, key: str, required: Collection[str] | None = None
) -> dict[str, Any]:
    """`data` as keyword arguments for the dataclass `cls` (lists become tuples); the
    fields in `required` (default: those without a default) must be there."""
    if not isinstance(data, dict):
        raise InputError(f"{key} must be an object, got {data!r}")
    hints = typing.get_type_hints(cls)
    declared = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(declared))
    if unknown:
        raise InputError(f"{key}.{unknown[0]} is not a known setting")
    if required is None:
        required = [
            f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
        ]
    missing = [name for name in required if name not in data]
    if missing:
        raise InputError(f"{key}.{missing[0]} is missing")
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


def built(cls: type, values: dict[str, Any], key: str) -> Any:
    """`cls(**values)`; a problem its own checks find is named under `key` (`key.field …`
    when the problem starts with a field's name, else `key: …`)."""
    try:
        return cls(**values)
    except InputError as e:
        names = {f.name for f in fields(cls)}
        joined = "." if e.problem.split(" ", 1)[0] in names else ": "
        raise InputError(f"{key}{joined}{e.problem}") from e
