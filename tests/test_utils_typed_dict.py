"""utils/typed_dict.py: a value conforms to a type hint."""

import math

import pytest

from l2bt.utils.typed_dict import conforms


@pytest.mark.parametrize(
    ("value", "hint", "expected"),
    [
        (3, int, True),
        (3.0, int, False),
        (True, int, False),
        (3, float, True),
        (math.nan, float, False),
        (-math.inf, float, False),
        (None, str | None, True),
        ("a", str | None, True),
        (1, str | None, False),
        ([1, 2], tuple[int, int], True),
        ([1, 2, 3], tuple[int, int], False),
        ([1, "2"], tuple[int, int], False),
        ([], tuple[str, ...], True),
        (["a", None], tuple[str, ...], False),
        ("ab", tuple[str, ...], False),
    ],
)
def test_conforms(value, hint, expected):
    assert conforms(value, hint) is expected
