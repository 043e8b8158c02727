"""Compare two JSON-like results number by number: pytest.approx takes flat containers only."""
from __future__ import annotations

import math

import pytest


def assert_same_numbers(actual, expected, rel: float = 1e-6, path: str = "") -> None:
    """Equal structure (dict keys, list lengths, types of leaves), every number within ``rel``
    (NaN equals NaN), every other leaf equal. The failure names the path of the first difference."""
    where = path or "the top level"
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: {actual!r} is not a dict"
        assert set(actual) == set(expected), f"{where}: keys differ: {sorted(set(actual) ^ set(expected))}"
        for key in expected:
            assert_same_numbers(actual[key], expected[key], rel, f"{path}.{key}" if path else str(key))
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)), f"{where}: {actual!r} is not a sequence"
        assert len(actual) == len(expected), f"{where}: {len(actual)} items, expected {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same_numbers(a, e, rel, f"{path}[{i}]")
    elif isinstance(expected, (int, float)) and not isinstance(expected, bool):
        assert isinstance(actual, (int, float)) and not isinstance(actual, bool), f"{where}: {actual!r} is not a number"
        if isinstance(expected, float) and math.isnan(expected):
            assert isinstance(actual, float) and math.isnan(actual), f"{where}: {actual!r}, expected NaN"
        else:
            assert actual == pytest.approx(expected, rel=rel), f"{where}: {actual!r} != {expected!r}"
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"
