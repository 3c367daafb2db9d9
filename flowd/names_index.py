"""The store's index of flows by name: a name's key (30 bits of its hash, see
:func:`flowd.flow_lines.name_key`) -> the ids so named, in the order they got the name.

No I/O. Two tiers. The flows of a load, a million after a restart, sit in a flat
open-addressing table: an ``array`` of keys and a list of ids, no Python object per
flow (a dict of int keys held ~70 bytes a flow, the dict and an int object each; this
~20: the daemon's RSS at 1M flows went from 758 to 707 MiB). It is sized once for the
load and never grows: after the load it only loses entries (a flow renamed or
deleted). The flows named since the load, fewer, sit in a dict beside it. Every flow
of the first tier got its name before every flow of the second, so a key's ids are
the first tier's, then the second's, in order.

A key maps to one id (most names are unique: a dict per name would cost ~200 bytes
a flow) or, when shared (the same name, or a collision of keys), to an ordered dict
of ids. The caller keeps the flows whose name is the one asked for.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from typing import cast

Ids = str | dict[str, None]
#: the first tier's size per flow it is built for: at most 3/5 of its slots are used,
#: so a lookup probes ~1.75 slots, a miss ~3.6 (linear probing)
SLOTS_PER_FLOW = 5 / 3
_EMPTY = 0  # a slot holds its key + 1: a key of 0 stays apart from an empty slot


def _added(have: Ids | None, fid: str) -> Ids:
    if have is None or have == fid:
        return fid
    if type(have) is str:
        return {have: None, fid: None}
    cast("dict[str, None]", have)[fid] = None
    return have


def _removed(have: Ids, fid: str) -> Ids | None:
    """``have`` without ``fid`` (None: no id left)."""
    if type(have) is str:
        return None if have == fid else have
    have = cast("dict[str, None]", have)
    have.pop(fid, None)
    return next(iter(have)) if len(have) == 1 else have


def _holds(have: Ids, fid: str) -> bool:
    return have == fid if type(have) is str else fid in have


def _listed(have: Ids | None) -> list[str]:
    return [] if have is None else [have] if type(have) is str else list(have)


class NamesIndex:
    """The index of one load: built for ``loaded`` flows by :meth:`fill`, kept by
    :meth:`add` and :meth:`remove`, read by :meth:`ids`."""

    __slots__ = ("_keys", "_ids", "_size", "_room", "_later")

    def __init__(self, loaded: int = 0) -> None:
        size = int(loaded * SLOTS_PER_FLOW) + 1 if loaded else 0
        self._size = size
        #: slots still to be taken: a full table would make a probe loop for ever
        self._room = loaded
        self._keys = array("I", [_EMPTY]) * size
        #: the id(s) of each slot's key; None: a key whose flows have all gone (the
        #: slot stays taken, so that the keys probed past it are still found)
        self._ids: list[Ids | None] = [None] * size
        self._later: dict[int, Ids] = {}

    def _slot(self, key: int) -> int:
        """Where ``key`` is in the first tier, or the empty slot where it would go."""
        keys, size, want = self._keys, self._size, key + 1
        at = key % size
        while True:  # bounded: at most 3/5 of the slots are ever taken
            have = keys[at]
            if have == want or have == _EMPTY:
                return at
            at = at + 1 if at + 1 < size else 0

    def fill(self, keys: Iterable[int], ids: Iterable[str]) -> None:
        """Index flows of the load (at most ``loaded`` of them in all), in order."""
        table, found, size, room = self._keys, self._ids, self._size, self._room
        try:
            for key, fid in zip(keys, ids, strict=True):  # _slot inlined: 0.72 s at 1M, 0.52
                want, at = key + 1, key % size
                while (have := table[at]) != want and have != _EMPTY:
                    at = at + 1 if at + 1 < size else 0
                if have != _EMPTY:
                    found[at] = _added(found[at], fid)
                elif room:
                    table[at], found[at], room = want, fid, room - 1
                else:
                    raise ValueError("more names than the index was built for")
        finally:
            self._room = room

    def add(self, key: int, fid: str) -> None:
        """Index a flow named since the load (behind every flow named before it)."""
        later = self._later
        later[key] = _added(later.get(key), fid)

    def remove(self, key: int, fid: str) -> None:
        later = self._later
        have = later.get(key)
        if have is not None and _holds(have, fid):
            left = _removed(have, fid)
            if left is None:
                del later[key]
            else:
                later[key] = left
            return
        if self._size:
            at = self._slot(key)
            have = self._ids[at]
            if have is not None:
                self._ids[at] = _removed(have, fid)

    def ids(self, key: int) -> list[str]:
        """The ids indexed under ``key``, in the order they got their names."""
        first = self._ids[self._slot(key)] if self._size else None
        return _listed(first) + _listed(self._later.get(key))

    def items(self) -> Iterator[tuple[int, list[str]]]:
        """Every key with ids, and its ids (tests, diagnostics: a pass over all)."""
        keys = dict.fromkeys(k - 1 for k, have in zip(self._keys, self._ids, strict=True)
                             if have is not None)
        keys.update(dict.fromkeys(self._later))
        for key in keys:
            yield key, self.ids(key)
