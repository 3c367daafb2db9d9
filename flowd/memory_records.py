"""The records of ``.flows.json.memory``: one remembered file each, checked on read.

The sidecar is input like any other file in the data dir: a record of the
wrong shape is refused (the reader keeps the files before it). A record maps
flow ids to digests (:mod:`flowd.digests`), the ``redo`` that turns the map of
the file before into this file's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .digests import Digest

Delta = dict[str, Digest | None]


@dataclass
class Remembered:
    """One file: ``undo`` turns the map of this file into the map of the one before."""

    number: int
    revision: int
    current: str | None
    own: bool
    #: wall time it was remembered: for retention only, never for a merge decision
    seen: float
    undo: Delta


_STR, _PLAIN = frozenset((str,)), frozenset((int, type(None)))


def _digest_value(raw: Any) -> Digest | None:
    if raw is None or type(raw) is int:
        return raw
    if type(raw) is list and len(raw) == 2 and all(type(x) is int for x in raw):
        return (raw[0], raw[1])
    raise ValueError(f"bad digest {raw!r}")


def parse_record(frame: dict[str, Any]) -> tuple[Remembered, Delta]:
    """One sidecar record, checked (the file is input like any other)."""
    fields: list[Any] = [frame.get(k) for k in ("n", "r", "c", "o", "t", "d")]
    n, r, c, o, t, d = fields
    if (type(n) is not int or type(r) is not int or not (c is None or type(c) is str)
            or type(o) is not bool or type(t) not in (int, float) or type(d) is not dict):
        raise ValueError("bad record")
    if set(map(type, d)) <= _STR and set(map(type, d.values())) <= _PLAIN:
        redo: Delta = d  # ids and plain digests (the common case): checked in C
    else:
        redo = {str(fid): _digest_value(v) for fid, v in d.items()}
    return Remembered(n, r, c, o, float(t), {}), redo


def record_of(e: Remembered, redo: Delta) -> dict[str, Any]:
    return {"n": e.number, "r": e.revision, "c": e.current, "o": e.own, "t": e.seen,
            "d": {fid: list(v) if type(v) is tuple else v for fid, v in redo.items()}}
