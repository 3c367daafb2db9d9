"""What a request's values may be: the checks behind the op table's argument specs.

Pure (stdlib only). Each check takes the argument's name (for the one-line
error) and its value, and raises or returns None; ``check_value`` refuses
anything flows.json cannot hold exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .errors import InvalidArgumentError, TooLargeError

#: Deepest nesting of a value inside a plan or flow (flows.json adds 4 levels).
MAX_DEPTH = 64
MAX_STRING_BYTES = 1024 * 1024
MAX_NAME_CHARS = 4096
MAX_ID_CHARS = 128
#: keys of a flow that only the daemon's own arguments set
FLOW_CORE_KEYS = ("id", "name", "plans", "created", "updated", "revision")
MAX_PAGE = 100_000
INT_MIN, INT_MAX = -(2**63), 2**64 - 1


def check_value(value: Any, what: str = "value", depth: int = 0) -> None:
    """Refuse anything flows.json cannot hold exactly (bytes, NaN, huge ints...).

    Iterative, so a hostile depth cannot exhaust the Python stack. Only maps and
    lists go on the stack; strings (most of a flow) are checked where they are met:
    this runs on every write's arguments, on the daemon's single thread.
    ``depth``: the level ``value`` sits at (a list of plans checked at once: -1).
    """
    stack: list[tuple[Any, int]] = [(value, depth)]
    pop, push = stack.pop, stack.append
    while stack:
        v, depth = pop()
        t = type(v)
        if t is not dict and t is not list:
            _scalar(v, t, what)
            continue
        if depth >= MAX_DEPTH:
            raise InvalidArgumentError(f"{what}: nested deeper than {MAX_DEPTH}")
        depth += 1
        if t is dict:
            for k in v:
                if type(k) is not str:
                    raise InvalidArgumentError(f"{what}: map key {k!r} is not a string")
            v = v.values()
        for x in v:
            tx = type(x)
            if tx is str:
                if len(x) > MAX_STRING_BYTES:
                    raise TooLargeError(f"{what}: string longer than {MAX_STRING_BYTES}")
            elif tx is dict or tx is list:
                push((x, depth))
            elif tx is int:  # inline: a plan's ids and counters, a call each otherwise
                if not INT_MIN <= x <= INT_MAX:
                    raise InvalidArgumentError(f"{what}: integer {x} does not fit in 64 bits")
            elif x is not None and tx is not bool:
                _scalar(x, tx, what)


def _scalar(v: Any, t: type, what: str) -> None:
    if v is None or v is True or v is False:
        return
    if t is str:
        if len(v) > MAX_STRING_BYTES:
            raise TooLargeError(f"{what}: string longer than {MAX_STRING_BYTES}")
    elif t is int:
        if not INT_MIN <= v <= INT_MAX:
            raise InvalidArgumentError(f"{what}: integer {v} does not fit in 64 bits")
    elif t is float:
        if not math.isfinite(v):
            raise InvalidArgumentError(f"{what}: {v} is not a finite number")
    else:
        raise InvalidArgumentError(f"{what}: {t.__name__} cannot be stored in flows.json")


Check = Callable[[str, Any], None]


def of_type(*types: type, none: bool = False) -> Check:
    names = "/".join(t.__name__ for t in types) + (" or null" if none else "")

    def check(name: str, v: Any) -> None:
        if v is None and none:
            return
        if type(v) not in types:
            raise InvalidArgumentError(f"{name} must be {names}, not {type(v).__name__}")
    return check


def flow_name(name: str, v: Any) -> None:
    if type(v) is not str:
        raise InvalidArgumentError(f"{name} must be str, not {type(v).__name__}")
    if len(v) > MAX_NAME_CHARS:
        raise TooLargeError(f"{name} is longer than {MAX_NAME_CHARS} characters")


def opt_name(name: str, v: Any) -> None:
    if v is not None:
        flow_name(name, v)


def revision(name: str, v: Any) -> None:
    if v is not None and (type(v) is not int or v < 0 or v > INT_MAX):
        raise InvalidArgumentError(f"{name} must be a non-negative integer or null")


def plan(name: str, v: Any) -> None:
    if type(v) is not dict:
        raise InvalidArgumentError(f"{name} must be a map, not {type(v).__name__}")
    check_value(v, name)


def plans(name: str, v: Any) -> None:
    if v is None:
        return
    if type(v) is not list:
        raise InvalidArgumentError(f"{name} must be a list of maps, not {type(v).__name__}")
    try:  # all at once (each plan at its own depth 0); the exact refusal plan by plan
        for p in v:
            if type(p) is not dict:
                raise InvalidArgumentError(name)
        check_value(v, name, depth=-1)
    except (InvalidArgumentError, TooLargeError):
        for i, p in enumerate(v):
            plan(f"{name}[{i}]", p)
        raise


def index(name: str, v: Any) -> None:
    if v is not None and type(v) is not int:
        raise InvalidArgumentError(f"{name} must be an integer or null")


def since(name: str, v: Any) -> None:
    if type(v) is not int or not 0 <= v <= INT_MAX:
        raise InvalidArgumentError(f"{name} must be a non-negative integer")


def flow_id(name: str, v: Any) -> None:
    if v is None:
        return
    if type(v) is not str or not 1 <= len(v) <= MAX_ID_CHARS:
        raise InvalidArgumentError(f"{name} must be a string of 1..{MAX_ID_CHARS} characters")


def extra(name: str, v: Any) -> None:
    """Keys a newer tool keeps in a flow; the daemon's own keys cannot be set this way."""
    if v is None:
        return
    if type(v) is not dict:
        raise InvalidArgumentError(f"{name} must be a map")
    core = set(v) & set(FLOW_CORE_KEYS)
    if core:
        raise InvalidArgumentError(f"{name} cannot set {sorted(core)}: use the arguments")
    check_value(v, name)


def limit(name: str, v: Any) -> None:
    if v is not None and (type(v) is not int or not 1 <= v <= MAX_PAGE):
        raise InvalidArgumentError(f"{name} must be an integer in 1..{MAX_PAGE}")
