"""The methods a benchmark compares, chosen by name: `l2bt`, `l2bt@N`, `patchcore`,
`dinomaly`, `external:NAME=DIR`. Importing this package is cheap: each method's module
(and torch) is imported when the method is made."""

from l2bt.methods.base import Method, MethodSettings
from l2bt.methods.external import ExternalMaps
from l2bt.methods.registry import METHOD_NAMES, make_method

__all__ = ["METHOD_NAMES", "ExternalMaps", "Method", "MethodSettings", "make_method"]
