"""The memory of written files rebuilt from its sidecar's records (no I/O).

The records run forward: the oldest remembered file's whole map, then each later
file's changes (``redo``). Rebuilding replays them, giving each file the ``undo`` that
turns the next file's map back into its own, then undoes the tool files absorbed after
flowd's newest own file: what is left is that file's map, ``own``. The oldest map,
when packed, is replayed as a :class:`flowd.deferred_map.DeferredMap`: the replay
reads it at the ids the later records touch only, and its dict is built later.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, cast

from .deferred_map import DeferredMap
from .digests import Digest
from .memory_records import Delta, Packed, Remembered, apply_delta, merged, parse_record_apart

Record = tuple[Remembered, Delta, "Packed | None"]
Map = dict[str, Digest] | DeferredMap
#: entries of a packed map built per loop turn after a restart (about 2-3 ms)
SETTLE_SLICE = 8192


@dataclass
class Rebuilt:
    """What the records make: the files (oldest first) and the newest own file's map."""

    entries: list[Remembered] = field(default_factory=list)
    own: Map = field(default_factory=dict)
    #: the store revision of flowd's newest own file (-1: none is remembered)
    own_rev: int = -1
    #: the changes of the tool files absorbed after it, in order
    overlays: list[Delta] = field(default_factory=list)


def records_of(frames: list[dict[str, Any]]) -> tuple[list[Record], str | None]:
    """The records, checked, up to the first bad one (and why it is bad). Only the first
    keeps its packed digests apart: the others are small, or rare, and merged at once."""
    out: list[Record] = []
    for frame in frames:
        try:
            entry, redo, packed = parse_record_apart(frame)
        except (ValueError, TypeError) as exc:
            return out, str(exc)
        if out and packed is not None:
            redo, packed = merged(packed, redo), None
        out.append((entry, redo, packed))
    return out, None


def rebuild(records: list[Record]) -> Rebuilt:
    out = Rebuilt()
    m: Map = {}
    redos: list[Delta] = []
    for i, (entry, redo, packed) in enumerate(records):
        if i == 0 and None not in redo.values():
            # the oldest file's whole map: taken, not copied (it is never an overlay)
            m = cast("dict[str, Digest]", redo) if packed is None else _deferred(
                packed, redo, records)
        else:
            if packed is not None:  # a first record that is no whole map
                redo = merged(packed, redo)
            entry.undo = {fid: m.get(fid) for fid in redo} if i else {}
            apply(m, redo)
        out.entries.append(entry)
        redos.append(redo)
    last_own = max((i for i, e in enumerate(out.entries) if e.own), default=None)
    if last_own is not None:
        for e in reversed(out.entries[last_own + 1:]):
            apply(m, e.undo)
        out.own_rev = out.entries[last_own].revision
        out.overlays = redos[last_own + 1:]
    out.own = m
    return out


def _deferred(packed: Packed, first: Delta, records: list[Record]) -> DeferredMap:
    touched = set(first)
    for _entry, redo, _packed in records[1:]:
        touched.update(redo)
    m = DeferredMap(*packed, touched)
    m.apply(first)
    return m


def apply(m: Map, delta: Delta) -> None:
    if isinstance(m, DeferredMap):
        m.apply(delta)
    else:
        apply_delta(m, delta)


class OwnMap:
    """``own``, the digests of the newest file flowd wrote, by id, which a restart may
    leave packed: read through the property, it is built first (at once), so nothing
    ever reads a partial map; :meth:`settle_step` builds it a slice at a time before
    anyone asks (the daemon's loop, after it is ready). Building takes a lock: the
    snapshot thread, which remembers files, may be the first to ask."""

    def __init__(self) -> None:
        self._own: dict[str, Digest] = {}
        #: the newest map while it is still being built
        self._deferred: DeferredMap | None = None
        self._settling = threading.Lock()

    @property
    def own(self) -> dict[str, Digest]:
        if self._deferred is not None:
            self.settle()
        return self._own

    @own.setter
    def own(self, value: dict[str, Digest]) -> None:
        self._own, self._deferred = value, None

    def take(self, m: Map) -> None:
        """The map a rebuild gave, packed or not."""
        if isinstance(m, DeferredMap):
            self._own, self._deferred = {}, m
        else:
            self.own = m

    def keys_in_order(self) -> Collection[str]:
        """The newest map's keys, in order, as the same objects, without building it."""
        deferred = self._deferred
        return self._own if deferred is None else deferred.order()

    @property
    def settling(self) -> bool:
        """The newest map is still packed: :meth:`settle_step` has work to do."""
        return self._deferred is not None

    def settle_step(self, slice_size: int = SETTLE_SLICE) -> None:
        """One slice; none if another thread is building it all (the loop must not
        wait for that)."""
        if self._settling.acquire(blocking=False):
            try:
                self._build(slice_size, whole=False)
            finally:
                self._settling.release()

    def settle(self) -> None:
        """All of it, now (a slice at a time: other threads get the GIL in between)."""
        with self._settling:
            self._build(SETTLE_SLICE, whole=True)

    def _build(self, slice_size: int, whole: bool) -> None:
        deferred = self._deferred
        while deferred is not None:
            if deferred.step(slice_size):
                self._settled(deferred)
                return
            if not whole:
                return

    def _settled(self, deferred: DeferredMap) -> None:
        self._own, self._deferred = deferred.built(), None
        gc.freeze()  # long-lived and acyclic: no young collection should walk it
