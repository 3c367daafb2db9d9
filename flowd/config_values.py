"""Converters for flowd's settings: a raw value (a string from the command line
or the environment, a TOML value from the config file) to a checked value.

Each raises ValueError with a message naming the raw value; ``flowd.config``
adds the setting and where the value came from.
"""

from __future__ import annotations

import grp
import ipaddress
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

KiB, MiB, GiB = 1024, 1024**2, 1024**3
_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")
_SIZE_UNITS = {"": 1, "k": KiB, "kib": KiB, "m": MiB, "mib": MiB, "g": GiB, "gib": GiB}


def _text(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"expected a string, got {type(raw).__name__}")
    return raw


def to_path(raw: Any) -> str:
    value = _text(raw)
    if not value.strip() or "\0" in value:
        raise ValueError(f"{value!r} is not a usable path")
    return value


def to_choice(choices: Sequence[str], upper: bool = False) -> Callable[[Any], str]:
    def convert(raw: Any) -> str:
        value = _text(raw).strip()
        value = value.upper() if upper else value.lower()
        if value not in choices:
            raise ValueError(f"{raw!r} is not one of {', '.join(choices)}")
        return value

    return convert


def to_seconds(raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ValueError(f"expected a number of seconds, got {type(raw).__name__}")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{raw!r} must be a finite number > 0")
    return value


def _to_int(raw: Any, units: Mapping[str, int]) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise ValueError(f"expected an integer, got {type(raw).__name__}")
    if isinstance(raw, int):
        return raw
    m = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", raw)
    if not m or m.group(2).lower() not in units:
        hint = " (units: K, M, G)" if len(units) > 1 else ""
        raise ValueError(f"{raw!r} is not an integer{hint}")
    return int(m.group(1)) * units[m.group(2).lower()]


def to_size(minimum: int) -> Callable[[Any], int]:
    def convert(raw: Any) -> int:
        value = _to_int(raw, _SIZE_UNITS)
        if value < minimum:
            raise ValueError(f"{raw!r} must be at least {minimum} bytes")
        return value

    return convert


def to_count(raw: Any) -> int:
    value = _to_int(raw, {"": 1})
    if value < 0:
        raise ValueError(f"{raw!r} must be >= 0")
    return value


def to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    value = _text(raw).strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise ValueError(f"{raw!r} is not a boolean (use 1/0, true/false, yes/no)")


def to_endpoint(raw: Any) -> str:
    """Syntax only; the loopback rule is in flowd.config."""
    value = _text(raw).strip()
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in ("ipc", "tcp"):
        raise ValueError(f"{value!r} must start with ipc:// or tcp://")
    if scheme == "ipc" and not rest:
        raise ValueError(f"{value!r} has no socket path")
    if scheme == "tcp":
        split_tcp(value)
    return value


def split_tcp(endpoint: str) -> tuple[str, str]:
    rest = endpoint[len("tcp://") :]
    if rest.startswith("["):
        host, sep, port = rest[1:].partition("]:")
    else:
        host, sep, port = rest.rpartition(":")
    if not host or not sep or not (port == "*" or (port.isdigit() and 0 < int(port) < 65536)):
        raise ValueError(f"{endpoint!r} must look like tcp://HOST:PORT (PORT 1-65535 or *)")
    return host, port


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def to_group(raw: Any) -> str:
    """A group name or number that exists on this machine (kept as given)."""
    value = str(raw).strip() if isinstance(raw, int) and not isinstance(raw, bool) else (
        _text(raw).strip())
    try:
        if value.isdigit():
            grp.getgrgid(int(value))
        else:
            grp.getgrnam(value)
    except KeyError:
        raise ValueError(f"{value!r} is not a group on this machine") from None
    return value


def group_id(value: str) -> int:
    """The gid of a group checked by :func:`to_group`."""
    return int(value) if value.isdigit() else grp.getgrnam(value).gr_gid


def to_etcd_endpoints(raw: Any) -> tuple[str, ...]:
    """Comma-separated (or, in TOML, a list of) etcd client URLs; syntax only
    (whether TLS files go with https is checked when the backend starts)."""
    from .etcd_endpoints import grpc_target  # pure: no grpc

    items = raw if isinstance(raw, list) else _text(raw).split(",")
    urls = tuple(_text(u).strip() for u in items if _text(u).strip())
    if not urls:
        raise ValueError(f"{raw!r} names no etcd endpoint")
    for url in urls:
        try:
            grpc_target(url, False)
        except Exception as exc:  # noqa: BLE001 - InvalidArgumentError, said as ValueError
            raise ValueError(str(exc)) from None
    return urls


def to_etcd_prefix(raw: Any) -> str:
    value = _text(raw).strip()
    if not value.startswith("/") or len(value.rstrip("/")) < 2 or "\0" in value:
        raise ValueError(f"{value!r} is not a key prefix like /flowd/NAME")
    return value.rstrip("/")
