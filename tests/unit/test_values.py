"""Argument values without a daemon: check_value refuses what flows.json cannot hold
exactly (flowd_client.values), and says which field it was."""

from __future__ import annotations

import math
from typing import Any

import pytest
from flowd_client.errors import InvalidArgumentError, TooLargeError
from flowd_client.protocol import (
    INT_MAX,
    INT_MIN,
    MAX_DEPTH,
    MAX_STRING_BYTES,
    check_args,
    check_value,
)


@pytest.mark.parametrize("value", [
    None, True, False, 0, INT_MIN, INT_MAX, -1.5, 0.0, -0.0, 1e308, "", "텍스트 \x00",
    "x" * MAX_STRING_BYTES, [], {}, [1, "a", None, {"k": [True]}], {"": {"a": []}},
    [INT_MIN, INT_MAX], {"id": INT_MAX, "n": INT_MIN},
])
def test_check_value_accepts_json_values(value: Any) -> None:
    check_value(value)


@pytest.mark.parametrize("value", [
    b"x", bytearray(b"x"), math.nan, math.inf, -math.inf, INT_MAX + 1, INT_MIN - 1,
    2**100, {1: "a"}, {None: 1}, {(1,): 1}, ("a",), {1, 2}, object(), [b"x"],
    {"a": {"b": [1, 2, {"c": math.nan}]}}, {"k": {2: "v"}},
    [INT_MAX + 1], {"id": INT_MIN - 1}, [{"id": 2**64}],
])
def test_check_value_refuses_what_json_cannot_hold(value: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        check_value(value)


def test_check_value_string_limit() -> None:
    with pytest.raises(TooLargeError):
        check_value({"s": "x" * (MAX_STRING_BYTES + 1)})


def _nested(depth: int) -> Any:
    v: Any = 1
    for i in range(depth):
        v = [v] if i % 2 else {"k": v}
    return v


def test_check_value_depth_boundary() -> None:
    check_value(_nested(MAX_DEPTH))
    with pytest.raises(InvalidArgumentError, match="deeper"):
        check_value(_nested(MAX_DEPTH + 1))


def test_check_value_hostile_depth_does_not_recurse() -> None:
    v: Any = []
    for _ in range(200_000):
        v = [v]
    with pytest.raises(InvalidArgumentError):
        check_value(v)


def test_check_value_names_the_field() -> None:
    with pytest.raises(InvalidArgumentError, match=r"plans\[0\]"):
        check_args("add_flow", {"name": "x", "plans": [{"v": math.nan}]})
