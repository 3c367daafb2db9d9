"""The memory of written files' oldest whole map, loaded without building its dict.

No I/O. At a restart the sidecar's first record holds every flow's id and digest, the
digests packed (:mod:`flowd.memory_records`); turning a million of them into a dict took
0.3-0.4 s of the start (the cache misses of a million inserts), before the daemon could
answer anyone, for a map that only a stray merge or the next snapshot reads.

The load itself needs little of it: the value of the few ids that later records touch
(to compute their undo), and the order the dict will have (the loader keys the store
by those very strings). :class:`DeferredMap` answers both from the packed arrays, an
index of the touched ids only and an overlay of what the later records did, and keeps
those records' deltas. :meth:`DeferredMap.step` then builds the dict a slice at a time
(the daemon does it after it is ready, a loop turn a slice) and replays the deltas in
order: the same dict, in the same order, with the same key objects as building it at
once and applying each delta as it came.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping
from itertools import compress, count, filterfalse
from typing import cast

from .digests import Digest
from .memory_records import Delta, apply_delta

_ABSENT = object()


class DeferredMap:
    """A dict of ``ids`` to ``digests`` (duplicates: the last value, at the first place)
    with deltas applied over it (:func:`flowd.memory_records.apply_delta`), read only at
    the ids of those deltas, and only those (``touched``) until it is built."""

    def __init__(self, ids: list[str], digests: array[int], touched: set[str]) -> None:
        self._ids: list[str] | None = ids
        self._digests: array[int] | None = digests
        self._touched = touched
        flags = list(map(touched.__contains__, ids)) if touched else []
        #: where the touched ids sit in the packed arrays (the last place of a repeated id)
        self._at: dict[str, int] = dict(zip(compress(ids, flags), compress(count(), flags),
                                            strict=False))
        #: the touched ids' values since the deltas (_ABSENT: deleted)
        self._overlay: dict[str, object] = {}
        #: ids of the packed arrays deleted at some point: they left their place
        self._left: set[str] = set()
        #: ids inserted after the packed ones (new, or deleted and inserted again), in order
        self._appended: dict[str, None] = {}
        self._deltas: list[Delta] = []
        self._order: list[str] | None = None
        self._built: dict[str, Digest] = {}
        self._done = 0

    def _present(self, fid: str) -> bool:
        if fid in self._overlay:
            return self._overlay[fid] is not _ABSENT
        return fid in self._at

    def get(self, fid: str) -> Digest | None:
        """The value at a touched id (another id: a programming error)."""
        assert fid in self._touched, fid
        if fid in self._overlay:
            value = self._overlay[fid]
            return None if value is _ABSENT else cast("Digest", value)
        at = self._at.get(fid)
        return None if at is None or self._digests is None else self._digests[at]

    def apply(self, delta: Mapping[str, Digest | None]) -> None:
        """What :func:`apply_delta` would do to the dict, kept for :meth:`step`; the order
        it gives follows a dict's: a changed key stays where it is, a new key goes last,
        a deleted key leaves its place (and goes last if it comes back)."""
        self._deltas.append(dict(delta))
        self._order = None
        for fid, value in delta.items():
            was = self._present(fid)
            if value is None:
                if was:
                    self._overlay[fid] = _ABSENT
                    if fid in self._appended:
                        del self._appended[fid]
                    else:
                        self._left.add(fid)
                continue
            if not was:
                self._appended[fid] = None
            self._overlay[fid] = value

    def order(self) -> list[str]:
        """The keys of the dict :meth:`step` builds, in its order, as the same objects."""
        if self._ids is None:
            return list(self._built)
        if self._order is None:
            ids = self._ids
            if self._left:
                ids = list(filterfalse(self._left.__contains__, ids))
            self._order = ids + list(self._appended)
        return self._order

    def step(self, slice_size: int) -> bool:
        """Build up to ``slice_size`` more entries; True once the dict is complete (the
        deltas replayed over it)."""
        ids, digests = self._ids, self._digests
        if ids is None or digests is None:
            return True
        start = self._done
        end = min(len(ids), start + slice_size)
        self._built.update(zip(ids[start:end], digests[start:end], strict=True))
        self._done = end
        if end < len(ids):
            return False
        for delta in self._deltas:
            apply_delta(self._built, delta)
        self._ids = self._digests = self._order = None
        self._deltas, self._overlay, self._at = [], {}, {}
        self._left, self._appended = set(), {}
        return True

    def built(self) -> dict[str, Digest]:
        """The dict, once :meth:`step` said it is complete."""
        assert self._ids is None, "not built yet"
        return self._built
