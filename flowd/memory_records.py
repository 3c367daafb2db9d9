"""The records of ``.flows.json.memory``: one remembered file each, checked on read.

The sidecar is input like any other file in the data dir: a record of the
wrong shape is refused (the reader keeps the files before it). A record maps
flow ids to digests (:mod:`flowd.digests`), the ``redo`` that turns the map of
the file before into this file's.
"""

from __future__ import annotations

import array
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .digests import Digest

Delta = dict[str, Digest | None]


def apply_delta(m: dict[str, Digest], delta: Mapping[str, Digest | None]) -> None:
    """Bring a map of digests to the next file: None in ``delta`` deletes."""
    if None not in delta.values():  # no deletion (a whole map, most deltas): all in C
        m.update(delta)  # type: ignore[arg-type]
        return
    for fid, value in delta.items():
        if value is None:
            m.pop(fid, None)
        else:
            m[fid] = value


#: records with this many digests or more pack their plain ones
PACK_FROM = 1024
_U64 = 1 << 64


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


def digest_value(raw: Any) -> Digest | None:
    if raw is None or type(raw) is int:
        return raw
    if type(raw) is list and len(raw) == 2 and all(type(x) is int for x in raw):
        return (raw[0], raw[1])
    raise ValueError(f"bad digest {raw!r}")


Packed = tuple[list[str], "array.array[int]"]


def merged(packed: Packed, redo: Delta) -> Delta:
    """A record's delta whole: its packed digests first, as it was written."""
    out: Delta = dict(zip(*packed, strict=True))
    out.update(redo)
    return out


def parse_record_apart(frame: dict[str, Any]) -> tuple[Remembered, Delta, Packed | None]:
    """One sidecar record, checked (the file is input like any other), with a big
    record's digests left packed: its ids and their digests, in order (:func:`merged`
    makes the whole delta; :class:`flowd.deferred_map.DeferredMap` reads them so)."""
    fields: list[Any] = [frame.get(k) for k in ("n", "r", "c", "o", "t", "d")]
    n, r, c, o, t, d = fields
    if (type(n) is not int or type(r) is not int or not (c is None or type(c) is str)
            or type(o) is not bool or type(t) not in (int, float) or type(d) is not dict):
        raise ValueError("bad record")
    packed = _packed(frame.get("k"), frame.get("v"))
    redo: Delta = {}
    if set(map(type, d)) <= _STR and set(map(type, d.values())) <= _PLAIN:
        redo.update(d)  # ids and plain digests (the common case): checked in C
    else:
        redo.update({str(fid): digest_value(v) for fid, v in d.items()})
    return Remembered(n, r, c, o, float(t), {}), redo, packed


def _packed(ids: Any, values: Any) -> Packed | None:
    """A big record's plain digests: its ids, and their digests as 8 bytes each."""
    if ids is None and values is None:
        return None
    if (type(ids) is not list or type(values) is not bytes
            or len(values) != 8 * len(ids) or not set(map(type, ids)) <= _STR):
        raise ValueError("bad packed digests")
    digests = array.array("Q", values)
    if sys.byteorder != "little":
        digests.byteswap()
    return ids, digests


def record_of(e: Remembered, redo: Delta) -> dict[str, Any]:
    """The record of one file; a whole map's plain digests are packed (a million of
    them decode in a fraction of the time a map of them takes). Every id is in the
    packed list, in the map's order, the others (pairs, deletions) with a placeholder
    that ``d`` overrides: read back, the map has its order (a list of the plain ids
    only put the others last, and the loader's ids hint out of step from the first
    flow with extra keys on)."""
    out: dict[str, Any] = {"n": e.number, "r": e.revision, "c": e.current, "o": e.own,
                           "t": e.seen}
    rest = redo
    if len(redo) >= PACK_FROM:
        ids = list(redo)
        digests = array.array("Q", [v if type(v) is int and 0 <= v < _U64 else 0
                                    for v in redo.values()])
        if sys.byteorder != "little":
            digests.byteswap()
        out["k"], out["v"] = ids, digests.tobytes()
        rest = {fid: v for fid, v in redo.items() if not (type(v) is int and 0 <= v < _U64)}
    out["d"] = {fid: list(v) if type(v) is tuple else v for fid, v in rest.items()}
    return out


def in_order(lines: Mapping[str, bytes], new: list[str]) -> list[str]:
    """Ids the newest map lacks, in the store's order. They are the flows added since the
    last file, at the end of the store's dict: a walk back from its end finds them. The
    newest map then keeps the store's order, so that after a restart the loader keys
    the store by the memory's id strings (``FileMemory.ids``)."""
    if not isinstance(lines, dict):
        return new
    want: set[str] = set(new)
    out: list[str] = []
    for fid in reversed(lines):
        if fid in want:
            out.append(fid)
            if len(out) == len(want):
                break
    out.reverse()
    return out
