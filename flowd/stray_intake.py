"""The loop's half of a stray merge parsed off the loop (:mod:`flowd.stray_parse`).

Once the child has written the tool's flows as lines, each loop turn takes one
frame of them (about a MiB) and compares it with the store's lines as bytes
(:func:`flowd.flow_lines.unheld_lines`); then, a slice at a time, it finds what
the merge and the memory's record of the tool's file would otherwise read off
every flow in one go (the store's flows theirs lacks, the newest map's, own's
digests that are pairs; the store's flows changed since flowd's newest file when
the snapshotter does not know them). Requests are served between the steps, so the
store changes meanwhile. It logs every change (``Store.changes``, kept for the
snapshot's replica; no snapshot starts while a merge is pending), and
:meth:`Intake.finish` compares again the flows changed since the intake began:
what it hands the merge is exactly what one pass at the end would have found.
If the log was reset (the store was loaded again), that one pass is made.

At a million flows a step holds the loop for 2-10 ms (70 ms when the dict of
theirs resizes), the merge's own last step 0.2-0.3 s, where the whole merge
used to hold it for 21-27 s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import compress, filterfalse, repeat
from typing import Any

from . import flow_lines
from .bases import FileMemory, Found
from .flow_lines import FlowTable
from .store import Store
from .stray_parse import FrameError, ToolFileParse, header_of, pairs_of

#: ids one step scans, in each of the three lists (the store's, the newest map's, own's)
SLICE = 2048


@dataclass
class Intake:
    store: Store
    parse: ToolFileParse
    memory: FileMemory
    #: the store's ids changed since the newest own file, when the snapshotter knows
    #: them (flowd.snapshotter.Snapshotter.unremembered); None: the slices read them
    known_changed: Callable[[], set[str] | None] = lambda: None
    header: dict[str, Any] | None = None
    #: theirs, as the lines flowd would store (without revision), in the file's order
    lines: dict[str, bytes] = field(default_factory=dict)
    #: ids of theirs whose line the store's does not hold, in theirs' order
    candidates: list[str] = field(default_factory=list)
    #: as each slice found them: the store's ids above ``own_rev`` and those theirs
    #: lacks; the newest map's ids theirs lacks; own ids whose digest is a pair
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    extras: list[str] = field(default_factory=list)
    _frames: Iterator[Any] | None = None
    #: the three scans left: the ids each reads (taken when it begins), and the scan
    _scans: list[tuple[Callable[[], Iterable[str]], Callable[[list[str]], None]]] | None = None
    _ids: list[str] | None = None
    _at: int = 0
    _log: list[tuple[str, bytes | None]] | None = None
    _mark: int = 0
    _generation: int = -1
    _own: dict[str, Any] = field(default_factory=dict)
    _own_rev: int = -1
    _overlays: int = 0
    _known: set[str] | None = None

    def __post_init__(self) -> None:
        self._log, self._generation = self.store.changes, self.store.generation
        self._mark = len(self._log) if self._log is not None else 0
        m = self.memory
        self._own, self._own_rev, self._overlays = m.own, m.own_rev, len(m.overlays)

    @property
    def corrupt(self) -> str | None:
        """The loader's message when the child found the file unusable."""
        return None if self.header is None else self.header.get("corrupt")

    def step(self) -> bool:
        """One bounded piece of the work (the child has exited); True when all is done.
        Raises :class:`FrameError` when the child's output is not what it writes."""
        if self._frames is None:
            self._frames = self.parse.frames()
            self.header = header_of(next(self._frames, None))
            return self.corrupt is not None
        if self._scans is None:
            return self._take_frame()
        while self._scans:
            ids, scan = self._scans[0]
            if self._ids is None:  # taken as its scan begins: a list of a million is 10-40 ms
                self._ids = list(ids())
                return False
            if self._at < len(self._ids):
                part = self._ids[self._at:self._at + SLICE]
                self._at += len(part)
                scan(part)
                return False
            del self._scans[0]
            self._ids, self._at = None, 0
        return True

    def _take_frame(self) -> bool:
        assert self._frames is not None and self.header is not None
        frame = next(self._frames, None)
        if frame is None:
            if len(self.lines) != self.header["count"]:
                raise FrameError(f"{len(self.lines)} flows of {self.header['count']}")
            self._known = self.known_changed()
            self._scans = [(lambda: self.store.flows.lines, self._scan_ours),
                           (self.memory.latest_ids, self._scan_latest),
                           (lambda: self._own, self._scan_own)]
            return False
        ids, lines = pairs_of(frame)
        chunk = dict(zip(ids, lines, strict=True))
        before = len(self.lines)
        self.lines.update(chunk)
        if len(self.lines) != before + len(ids):
            raise FrameError("an id twice")
        self.candidates += flow_lines.unheld_lines(self.store.flows.lines, chunk)
        return False

    def _scan_ours(self, part: list[str]) -> None:
        if self._known is None:  # a regex a line: 2 µs a flow at 1M
            self.changed += flow_lines.changed_after(self.store.flows.lines, self._own_rev, part)
        self.missing += filterfalse(self.lines.__contains__, part)

    def _scan_latest(self, part: list[str]) -> None:
        self.gone += filterfalse(self.lines.__contains__, part)

    def _scan_own(self, part: list[str]) -> None:
        self.extras += compress(part, map(isinstance, map(self._own.get, part), repeat(tuple)))

    def finish(self) -> Taken:
        """What one pass at the end would find, from the slices and the log."""
        store, theirs = self.store, FlowTable(self.lines)
        log, m = store.changes, self.memory
        if log is None or log is not self._log or store.generation != self._generation:
            return Taken(theirs, flow_lines.unheld_lines(store.flows.lines, self.lines))
        touched = dict.fromkeys(fid for fid, _ in log[self._mark:])  # in the log's order
        again = {fid: self.lines[fid] for fid in touched if fid in self.lines}
        candidates = self.candidates
        if again:
            picked = set(candidates).difference(again)
            picked.update(flow_lines.unheld_lines(store.flows.lines, again))
            candidates = list(filter(picked.__contains__, self.lines))
        ours, were = store.flows.lines, set(self.missing)
        missing = [fid for fid in self.missing if fid not in touched or fid in ours]
        missing += [fid for fid in touched  # added since the slices: at ours' end
                    if fid not in were and fid in ours and fid not in self.lines]
        found = None
        if m.own is self._own and (m.own_rev, len(m.overlays)) == (self._own_rev,
                                                                     self._overlays):
            # the slices read the changed ids only if the snapshotter did not know them
            changed = self.changed + list(touched) if self._known is None \
                else self.known_changed()
            found = Found(changed, self.gone, self.extras)
        return Taken(theirs, candidates, missing, found)


@dataclass
class Taken:
    """What :meth:`Intake.finish` hands the merge (None: the merge finds it itself)."""

    theirs: Mapping[str, Any]
    candidates: list[str]
    missing: list[str] | None = None
    found: Found | None = None
