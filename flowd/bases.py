"""flowd's memory of every flows.json it wrote or absorbed: the bases of stray merges.

An old tool writes back the ``meta.file_revision`` it loaded plus one. To merge
its file three ways flowd must know what that loaded file held, by number and
content: for each file it remembers the number, the store revision, the
current flow and a digest per flow (:mod:`flowd.digests`). Kept: at least the
last :data:`RETAIN_FILES` files or :data:`RETAIN_SECONDS` of them, whichever
is more, within :data:`MAX_BYTES`; persisted in ``.flows.json.memory``
(:mod:`flowd.storage.memory_file`) so it survives SIGTERM and SIGKILL.

Cost is proportional to change, not to files x flows: the newest map is held
whole, and each file keeps only how it differs from the one before (``undo``:
the previous file's digests at the ids that differ). On disk the same chain
runs forward: the oldest file's whole map, then each file's differences.

The snapshot thread calls :meth:`FileMemory.remember_written`; everything else
runs on the server loop, never while a snapshot runs (the loop checks for
stray files only between snapshots), so the two never overlap.
"""

from __future__ import annotations

import gc
import logging
import operator
import time
from collections.abc import Iterable, Mapping
from itertools import compress, filterfalse, islice, repeat
from pathlib import Path
from typing import Any, NamedTuple, cast

from . import flow_lines, memory_load
from .digests import Digest, digest
from .memory_load import OwnMap
from .memory_records import Delta, Remembered, apply_delta, in_order, record_of
from .storage import memory_file

log = logging.getLogger("flowd.memory")

RETAIN_FILES = 1000
RETAIN_SECONDS = 7 * 86400.0
#: bound on the memory (estimated bytes of RAM; the sidecar is smaller)
MAX_BYTES = 64 << 20
ENTRY_BYTES, ITEM_BYTES = 200, 100
#: ids re-keyed per C call (see FileMemory._share_ids)
SHARE_SLICE = 1024

#: the lines of a file's flows by id (flowd.flow_lines)
Lines = Mapping[str, bytes]
_REV = operator.itemgetter("revision")


class Found(NamedTuple):
    """What :meth:`FileMemory.tool_file_delta` reads off every flow, when known (None:
    it reads it): ``changed`` (ids of ours changed since the newest own file, or
    more), ``gone`` (the newest map's ids that theirs lacks), ``extras`` (own ids
    whose digest is a pair)."""

    changed: Iterable[str] | None
    gone: Iterable[str] | None = None
    extras: Iterable[str] | None = None


class FileMemory(OwnMap):
    """The remembered files, oldest first, and the maps needed to rebuild any of them."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.dir = directory
        self.entries: list[Remembered] = []
        #: the store revision of the newest file flowd wrote (``own``: its digests)
        self.own_rev = -1
        #: the differences of the tool files absorbed after it, in order
        self.overlays: list[Delta] = []
        self.max_number = 0
        self.items = 0
        #: False: the sidecar must be rewritten whole before the next append
        self.synced = False
        self.disk_bytes = 0
        self.last_error: str | None = None
        #: the newest map is keyed by the store's own id strings (see share_ids)
        self._ids_shared = False

    # ------------------------------------------------------------ numbers

    def note_number(self, number: int) -> None:
        self.max_number = max(self.max_number, number)

    def take_number(self) -> int:
        """flowd's next file number: after every number seen, never handed out twice."""
        self.max_number += 1
        return self.max_number

    @property
    def bytes(self) -> int:
        return ENTRY_BYTES * len(self.entries) + ITEM_BYTES * self.items

    # ------------------------------------------------------------ start

    def load(self) -> None:
        """Rebuild from the sidecar (a damaged tail is kept aside by the reader). The
        oldest file's whole map, when packed, stays so until :meth:`settle_step` builds
        it: a million entries were 0.3-0.4 s of a restart."""
        got = memory_file.read(self.dir)
        self.synced, self.disk_bytes = not got.rewrite, got.bytes
        records, bad = memory_load.records_of(got.frames)
        if bad is not None:
            log.warning("%s: unreadable record (%s): keeping the %d files before it",
                        memory_file.NAME, bad, len(records))
            self.synced = False
        rebuilt = memory_load.rebuild(records)
        for entry in rebuilt.entries:
            self._append(entry)
        self.own_rev, self.overlays = rebuilt.own_rev, rebuilt.overlays
        self.take(rebuilt.own)

    def adopt_loaded(self, number: int, revision: int, current: str | None,
                     flows: Mapping[str, dict],
                     digests: Mapping[str, Digest] | None = None) -> None:
        """The file flowd loaded at start must be remembered: the sidecar may be behind
        it (SIGKILL between installing flows.json and appending) or absent."""
        self.note_number(number)
        newest = next((e for e in reversed(self.entries) if e.own), None)
        if newest is not None and (newest.number, newest.revision) == (number, revision):
            return
        log.info("remembering flows.json %d (revision %d) from its content", number, revision)
        if digests is None:
            digests = {f: digest(x) for f, x in flows.items()}
        self._remember_own(number, revision, current, digests,
                           [fid for fid in self.own if fid not in flows], time.time())

    # ------------------------------------------------------------ remembering

    def remember_written(self, number: int, revision: int, current: str | None,
                         lines: Lines, changed: Iterable[str] | None) -> None:
        """A file flowd just installed (snapshot thread; ``lines``: its flows' lines by
        id). Only the flows ``changed`` since the file remembered last are decoded and
        digested (all of them when that is not known, or nothing is remembered yet)."""
        if not self._ids_shared:
            self.share_ids(lines)
        own = self.own
        ids: Iterable[str] = lines if changed is None or not own else changed
        changed_digests: dict[str, Digest] = {}
        for fid in ids:
            line = lines.get(fid)
            if line is not None:
                changed_digests[fid] = digest(flow_lines.decode(fid, line))
        new = [fid for fid in changed_digests if fid not in own]
        if ids is not lines and len(new) > 1:  # a set: the new ids in the store's order
            changed_digests = {**{fid: v for fid, v in changed_digests.items() if fid in own},
                               **{fid: changed_digests[fid] for fid in in_order(lines, new)}}
        gone: list[str] = []
        if len(own) + len(new) > len(lines):
            gone = [fid for fid in own if fid not in lines]
        self._remember_own(number, revision, current, changed_digests, gone, time.time())

    def ids(self) -> list[str]:
        """The ids of the newest file flowd wrote, in order: the loader keys the store by
        these very strings where the file it reads holds them (see :meth:`note_shared`)."""
        return list(self.keys_in_order())

    def note_shared(self, lines: Lines) -> None:
        """The newest map is keyed by the store's own id strings if the loader took them
        from :meth:`ids` (one C pass of identity checks): nothing left to share."""
        own = self.keys_in_order()  # the keys it has, or will have once built
        if len(own) <= len(lines) and all(map(operator.is_, own, lines)):
            self._ids_shared = True

    def share_ids(self, lines: Lines) -> None:
        """Key the newest map by the store's id strings, once (the sidecar's are copies:
        60 MB at 1M flows), in C a slice at a time (the GIL held under 1 ms a slice)."""
        own = self.own
        shared: dict[str, Digest] = {}
        ids = iter(lines)
        while chunk := list(islice(ids, SHARE_SLICE)):
            values = list(map(own.get, chunk))
            pairs: Iterable[tuple[str, Digest | None]] = zip(chunk, values, strict=True)
            if None in values:  # flows new since the file remembered last
                pairs = compress(pairs, map(operator.is_not, values, repeat(None)))
            shared.update(cast("Iterable[tuple[str, Digest]]", pairs))
        if len(shared) != len(own):  # ids the store no longer has
            for fid, value in own.items():
                if fid not in shared:
                    shared[fid] = value
        self.own, self._ids_shared = shared, True
        # long-lived and acyclic: no young collection should walk a million entries (a
        # 51 ms gen0 pass at 1M flows) before the next snapshot freezes it anyway
        gc.freeze()

    def _remember_own(self, number: int, revision: int, current: str | None,
                      changed: Mapping[str, Digest], gone: Iterable[str], now: float) -> None:
        own = self.own
        own_delta: Delta = {fid: v for fid, v in changed.items() if own.get(fid) != v}
        own_delta.update(dict.fromkeys(gone))
        ids = dict.fromkeys(own_delta)  # ordered: the sidecar keeps the newest map's order
        for overlay in self.overlays:  # where the newest file was a tool's
            ids.update(dict.fromkeys(overlay))
        prev = self.latest_getter()
        redo: Delta = {}
        undo: Delta = {}
        for fid in ids:
            new = own_delta[fid] if fid in own_delta else own.get(fid)
            old = prev(fid)
            if new != old:
                redo[fid], undo[fid] = new, old
        apply_delta(own, own_delta)
        self.own_rev, self.overlays = revision, []
        self.note_number(number)
        self._append(Remembered(number, revision, current, True, now,
                                undo if self.entries else {}))
        self._persist(self.entries[-1], redo, now)

    def tool_file_delta(self, theirs: Mapping[str, dict], ours: Mapping[str, dict],
                        suspects: Iterable[str], found: Found | None = None) -> Delta:
        """How a tool's file differs from the newest remembered file (its record).

        ``suspects`` are the ids where theirs is not a sub-map of ours; every other
        flow of theirs is ours' minus what the tool dropped, so its digest is the
        core of ours', which is the newest file's unless ours changed since or the
        newest file was a tool's. Only those few are digested; the rest is C-level
        set work, so 100k untouched flows cost no bytecode each. ``found``: that set
        work done beforehand, a slice at a time (flowd.stray_intake).
        """
        own, own_rev, prev = self.own, self.own_rev, self.latest_getter()
        changed, gone, extras = found or (None, None, None)
        if changed is None:
            changed = flow_lines.changed_after(ours.lines, own_rev) if isinstance(
                ours, flow_lines.FlowTable) else compress(  # the store: the lines' ends
                ours, map(operator.gt, map(_REV, ours.values()), repeat(own_rev)))
        if gone is None:
            held = theirs.lines if isinstance(theirs, flow_lines.FlowTable) else theirs
            gone = filterfalse(held.__contains__, self.latest_ids())
        if extras is None:
            extras = compress(own, map(isinstance, own.values(), repeat(tuple)))
        again = set(suspects)
        again.update(extras)
        again.update(changed)
        for overlay in self.overlays:
            again.update(overlay)
        redo: Delta = {}
        for fid in again:
            flow = theirs.get(fid)
            if flow is not None:
                tv = digest(flow)
                if prev(fid) != tv:
                    redo[fid] = tv
        redo.update(zip(gone, repeat(None)))
        return redo

    def remember_absorbed(self, number: int, revision: int, current: str | None,
                          redo: Delta) -> None:
        """A tool's file flowd merged: the next tool may have loaded it."""
        prev = self.latest_getter()
        undo = {fid: prev(fid) for fid in redo} if self.entries else {}
        self.overlays.append(redo)
        self.note_number(number)
        now = time.time()
        self._append(Remembered(number, revision, current, False, now, undo))
        self._persist(self.entries[-1], redo, now)

    def _append(self, entry: Remembered) -> None:
        self.entries.append(entry)
        self.items += len(entry.undo)

    # ------------------------------------------------------------ persistence

    def _persist(self, entry: Remembered, redo: Delta, now: float) -> None:
        """Append the new file's record, or rewrite the sidecar when it must be."""
        trimmed = self._trim(now)
        try:
            if self.synced and not trimmed:
                self.disk_bytes += memory_file.append(self.dir, record_of(entry, redo))
            else:
                self.disk_bytes = memory_file.rewrite(self.dir, self._records())
                self.synced = True
            self.last_error = None
        except OSError as exc:
            self.synced = False
            if self.last_error is None:
                log.error("could not write %s (%s): the memory of written files is kept in "
                          "memory and written again with the next snapshot",
                          memory_file.NAME, exc)
            self.last_error = f"{type(exc).__name__}: {exc}"

    def _trim(self, now: float) -> bool:
        """Forget the oldest files past retention (in batches), or past the byte bound."""
        entries, drop = self.entries, 0
        while (len(entries) - drop > RETAIN_FILES
               and entries[drop].seen < now - RETAIN_SECONDS):
            drop += 1
        over = self.bytes > MAX_BYTES
        if not over and drop < max(1, len(entries) // 10):
            return False
        budget = self.bytes
        while over and len(entries) - drop > 1 and budget > MAX_BYTES * 0.9:
            budget -= ENTRY_BYTES + ITEM_BYTES * len(entries[drop].undo)
            drop += 1
        if drop == 0:
            return False
        if over:
            log.warning("memory of written files over %d bytes: forgetting the %d oldest "
                        "files (tools that loaded them merge without deletions)",
                        MAX_BYTES, drop)
        for e in entries[:drop + 1]:
            self.items -= len(e.undo)
        del entries[:drop]
        entries[0].undo = {}
        return True

    def _records(self) -> list[dict[str, Any]]:
        """The whole chain forward: the oldest file's map, then each file's changes."""
        m = self._latest_map()
        out = []
        for i in range(len(self.entries) - 1, -1, -1):
            e = self.entries[i]
            out.append(record_of(e, dict(m) if i == 0 else {fid: m.get(fid) for fid in e.undo}))
            apply_delta(m, e.undo)
        out.reverse()
        return out

    # ------------------------------------------------------------ lookups

    def latest_getter(self) -> Any:
        if not self.overlays:
            return self.own.get
        merged = dict(self.own)
        for overlay in self.overlays:
            apply_delta(merged, overlay)
        return merged.get

    def latest_ids(self) -> Iterable[str]:
        return self._latest_map() if self.overlays else self.own

    def _latest_map(self) -> dict[str, Digest]:
        m = dict(self.own)
        for overlay in self.overlays:
            apply_delta(m, overlay)
        return m

    def map_at(self, index: int) -> dict[str, Digest]:
        """The digests of remembered file ``index``: the newest map, undone back to it."""
        m = self._latest_map()
        for e in reversed(self.entries[index + 1:]):
            apply_delta(m, e.undo)
        return m

    def candidates(self, claimed: int) -> list[int]:
        """Files a tool that writes ``claimed`` may have loaded: those numbered one
        less, and tool files numbered the same (a tool that saves twice without
        reloading writes the same number again)."""
        return [i for i, e in enumerate(self.entries)
                if e.number == claimed - 1 or (not e.own and e.number == claimed)]

    def ours_digest(self, ours: Mapping[str, dict]) -> Any:
        """Digest of a live flow: from flowd's newest file if unchanged since it."""
        own, own_rev = self.own, self.own_rev

        def get(fid: str) -> Digest | None:
            mine = ours.get(fid)
            if mine is None:
                return None
            if mine.get("revision", 0) <= own_rev:
                v = own.get(fid)
                if v is not None:
                    return v
            return digest(mine)
        return get

    def stats(self) -> dict[str, Any]:
        entries = self.entries
        return {"files": len(entries), "bytes_estimate": self.bytes,
                "sidecar_bytes": self.disk_bytes,
                "oldest_file": entries[0].number if entries else None,
                "newest_file": entries[-1].number if entries else None,
                "last_error": self.last_error,
                # a restart's packed newest map is still being built (after ready)
                "settling": self.settling}
