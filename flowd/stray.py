"""Absorbing a stray writer: an old tool rewrote flows.json behind flowd's back.

Its file is kept aside, merged three ways (:mod:`flowd.merge`) against the
file it loaded as flowd remembers it (:mod:`flowd.bases`: by number and
content, never by clock), and the merge is one journaled change with its own
revision. Evidence before effect: the tool's file and every version the merge
does not apply are on disk, fsynced, before the merge is journaled; if that
fails nothing is merged, flowd says so once and retries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from . import flow_lines
from .bases import FileMemory
from .digests import digest, same
from .heap import gc_paused
from .merge import Base, MergeResult, Unknown, suspects_of, three_way_merge
from .request_handler import RequestHandler
from .snapshotter import Snapshotter
from .storage import stray_files
from .storage.loader import load_file
from .storage.migrate import CorruptFileError
from .storage.snapshot import Fingerprint

log = logging.getLogger("flowd.stray")

#: unresolved conflicts flowd keeps track of (for stats and doctor)
MAX_TRACKED_CONFLICTS = 1000


@dataclass
class Conflict:
    """A flow whose tool version was kept aside at ``revision``; open until the flow
    changes again (someone resolved it) or its aside file is removed."""

    flow_id: str
    file: str
    revision: int
    flowd_deleted: bool


@dataclass
class Picked:
    base: Base | Unknown
    number: int | None
    why: str = ""


@dataclass
class Strays:
    service: RequestHandler
    snap: Snapshotter
    memory: FileMemory
    data_dir: Path
    #: tool files kept aside but not merged yet (a failed attempt): fingerprint -> evidence
    pending: dict[Fingerprint, Path] = field(default_factory=dict)
    failures: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    #: tool files already in the memory of files (a retried merge must not add them twice)
    remembered: dict[Fingerprint, None] = field(default_factory=dict)

    @property
    def failing(self) -> bool:
        return self.failures > 0

    # ------------------------------------------------------------ entry points

    def absorb(self) -> None:
        """flows.json changed behind our back: keep it, merge it, have it rewritten."""
        started = time.perf_counter()
        try:
            with gc_paused():  # a parsed file of acyclic objects: nothing to collect
                got = self._take_file()
                if got is not None:
                    fp, evidence, doc = got
                    self.merge(doc, evidence, fp, started)
                    del got, doc  # freed before the collector runs again, not walked by it
        except OSError as exc:
            self._failed(exc)

    def merge(self, doc: dict[str, Any], evidence: Path, fp: Fingerprint | None,
              started: float | None = None) -> None:
        """Merge a tool's document (kept aside as ``evidence``) as one journaled change;
        ``started``: when the loop began on it (perf_counter), for the log line."""
        store = self.service.store
        theirs = doc["flows"]
        for flow in theirs.values():
            flow.pop("revision", None)  # the loader's default: the tool never wrote one
        suspects = suspects_of(store.flows, theirs, flow_lines.unheld(store.flows.lines, theirs))
        picked = pick_base(self.memory, doc, store.flows, suspects)
        result = three_way_merge(picked.base, store.flows, store.current_flow_id, theirs,
                                 doc.get("current_flow_id"),
                                 ours_digest=self.memory.ours_digest(store.flows),
                                 new_id=store.begin().new_id, suspects=suspects)
        revision = store.revision + 1
        report = {**result.report, "revision": revision, "base": picked.number,
                  "base_known": isinstance(picked.base, Base), "evidence": evidence.name}
        aside = self._write_losers(result, report, store.flows)  # before the journal
        if fp is not None and fp not in self.remembered:
            self.memory.remember_absorbed(_number(doc) or 0, revision, doc.get("current_flow_id"),
                                          self.memory.tool_file_delta(theirs, store.flows,
                                                                      suspects))
            self.remembered[fp] = None
            while len(self.remembered) > MAX_TRACKED_CONFLICTS:
                del self.remembered[next(iter(self.remembered))]
        if aside is not None:
            report["aside"] = aside.name
        self._commit(result, report)
        self._done(fp, report, result, aside, picked,
                   None if started is None else time.perf_counter() - started)

    # ------------------------------------------------------------ steps

    def _take_file(self) -> tuple[Fingerprint, Path, dict[str, Any]] | None:
        """The tool's file, kept aside first: what is merged is what is kept."""
        path = self.snap.files.path
        try:
            fp = stray_files.file_fingerprint(path)
        except FileNotFoundError:
            log.warning("flows.json was removed behind flowd's back; writing it again")
            self.snap.file_lost()
            return None
        if fp == self.snap.files.known:
            return None  # flowd's own file after all
        evidence = self.pending.get(fp)
        if evidence is None:
            fp, held = stray_files.hold(self.data_dir, path)
            try:
                got = load_file(held)
            except CorruptFileError as exc:
                aside = stray_files.keep(held, "stray-corrupt")
                log.error("!!! flows.json was overwritten with an unreadable file (%s); kept as "
                          "%s; flowd writes its own state back", exc, aside.name)
                self.snap.accept_foreign(fp)
                return None
            evidence = stray_files.keep(held, "stray")
            self.pending[fp] = evidence
        else:
            got = load_file(evidence)
        return fp, evidence, got.doc

    def _write_losers(self, result: MergeResult, report: dict[str, Any],
                      ours: Mapping[str, Any]) -> Path | None:
        """Every version the merge does not apply, fsynced, before anything is journaled."""
        if not (result.conflicts or result.skipped_deletions or result.replaced):
            return None
        doc = {"merge": report,
               "conflicts": {fid: {"tool": tool, "flowd": ours.get(fid)}
                             for fid, tool in result.conflicts.items()},
               "skipped_deletions": result.skipped_deletions,
               "replaced": result.replaced}
        data = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
        return stray_files.write_merge(self.data_dir, data)

    def _commit(self, result: MergeResult, report: dict[str, Any]) -> None:
        store = self.service.store
        assert not self.service.pending, "stray merge while writes are staged"
        txn = store.begin()
        for op, fid, flow in result.changes:
            if flow is None:
                txn.delete(op, fid)
            else:
                txn.put(op, {**flow, "revision": txn.rev})
        if result.current_flow_id != txn.current:
            txn.current = result.current_flow_id
            if result.current_flow_id is not None:
                txn.changes.append(["set_current", result.current_flow_id, None])
        self.service.commit_internal(txn, merge=report)

    def _done(self, fp: Fingerprint | None, report: dict[str, Any], result: MergeResult,
              aside: Path | None, picked: Picked, seconds: float | None) -> None:
        if fp is not None:
            self.pending.pop(fp, None)
            self.snap.accept_foreign(fp)
        if self.failures:
            log.info("the stray flows.json is merged now, after %d failed attempts",
                     self.failures)
        self.failures = 0
        self.service.stats.strays.append(report)
        if aside is not None:
            self._track(result, aside.name, report["revision"])
        counts = {k: report[k] for k in ("added", "updated", "deleted", "conflicts",
                                         "skipped_deletions")}
        # the seconds tell an operator why clients timed out meanwhile (README, Durability)
        log.warning("stray flows.json merged into revision %d (base %s%s): %s; conflicts %s; "
                    "skipped deletions %s; tool's file kept as %s%s%s", report["revision"],
                    picked.number, "" if report["base_known"] else f", unknown: {picked.why}",
                    counts, report["conflict_ids"], report["skipped_deletion_ids"],
                    report["evidence"], f", versions not applied in {aside.name}" if aside
                    else "", "" if seconds is None else
                    f"; requests waited {seconds:.2f} s for the merge")

    def _failed(self, exc: OSError) -> None:
        self.failures += 1
        level = logging.ERROR if self.failures == 1 else logging.DEBUG
        log.log(level, "could not merge the stray flows.json (%s): nothing merged; flowd "
                "retries every second and does not overwrite it meanwhile", exc)

    # ------------------------------------------------------------ conflicts

    def _track(self, result: MergeResult, name: str, revision: int) -> None:
        store = self.service.store
        for fid in result.conflicts:
            self.conflicts.append(Conflict(fid, name, revision, fid not in store.flows))
        del self.conflicts[:-MAX_TRACKED_CONFLICTS]

    def load_conflicts(self) -> None:
        """At start: the conflicts recorded in the aside files still there."""
        for name, revision, fid, flowd_deleted in stray_files.read_conflicts(self.data_dir):
            self.conflicts.append(Conflict(fid, name, revision, flowd_deleted))
        del self.conflicts[:-MAX_TRACKED_CONFLICTS]

    def open_conflicts(self) -> list[dict[str, Any]]:
        """Conflicts nobody resolved yet: the flow is as the merge left it, file still there."""
        flows, out = self.service.store.flows, []
        names = {p.name for p in stray_files.merge_files(self.data_dir)}
        for c in self.conflicts:
            live = flows.get(c.flow_id)
            untouched = live is None if c.flowd_deleted else (
                live is not None and live.get("revision", 0) < c.revision)
            if untouched and c.file in names:
                out.append({"flow_id": c.flow_id, "file": c.file, "revision": c.revision})
        return out


def _number(doc: dict[str, Any]) -> int | None:
    value = (doc.get("meta") or {}).get("file_revision")
    return value if type(value) is int else None


def pick_base(memory: FileMemory, doc: dict[str, Any], ours: Mapping[str, Any],
              suspects: list[str]) -> Picked:
    """The file the tool loaded, by the number it claims and then by content.

    A tool writes the number it loaded plus one. Candidates carry that number
    (:meth:`FileMemory.candidates`); one that shares no flow id with the tool's
    file is no base (a file from elsewhere with a number that happens to
    match). Of several, the one that explains the tool's file with the fewest
    changes; a tie goes to the file flowd wrote itself, then the newer. A
    tool's file that holds a version older than the base's (a flow as it was
    in an earlier file) did not come from that base but through a tool's file
    flowd never saw: its base is unknown.
    """
    theirs = doc["flows"]
    fr = _number(doc)
    if fr is None:
        return _unknown(memory, theirs, "the file has no meta.file_revision")
    maps = [(i, memory.map_at(i)) for i in memory.candidates(fr)]
    maps = [(i, m) for i, m in maps if not m or any(fid in m for fid in theirs)]
    if not maps:
        return _unknown(memory, theirs, f"flowd remembers no file {fr - 1} that it could be "
                        "an edit of")
    i, m = maps[0] if len(maps) == 1 else _fewest_changes(memory, maps, theirs)
    entry = memory.entries[i]
    stale = _stale_copies(memory, i, m, suspects, theirs)
    if stale:
        return _unknown(memory, theirs, f"it holds versions older than file {entry.number} "
                        f"({', '.join(stale[:3])}): it was edited from a tool's file flowd "
                        "never saw")
    return Picked(Base(m, entry.current), entry.number)


def _stale_copies(memory: FileMemory, index: int, base: dict, suspects: list[str],
                  theirs: dict[str, Any]) -> list[str]:
    """Ids the tool holds as an earlier file had them, unlike the base."""
    older = memory.older_versions(suspects, index)
    out = []
    for fid in older:
        t = digest(theirs[fid])
        if not same(t, base.get(fid)) and any(same(t, v) for v in older[fid]):
            out.append(fid)
    return out


def _fewest_changes(memory: FileMemory, maps: list[tuple[int, dict]],
                    theirs: dict[str, Any]) -> tuple[int, dict]:
    """Candidates differ only where their maps differ: count the tool's changes there."""
    first = maps[0][1]
    where: set[str] = set()
    for _, m in maps[1:]:
        where.update(fid for fid, _ in first.items() ^ m.items())
    mine = {fid: digest(theirs[fid]) if fid in theirs else None for fid in where}

    def rank(item: tuple[int, dict]) -> tuple[int, bool, int]:
        i, m = item
        changes = sum(1 for fid in where if not same(mine[fid], m.get(fid)))
        return (changes, not memory.entries[i].own, -i)
    return min(maps, key=rank)


def _unknown(memory: FileMemory, theirs: dict[str, Any], why: str) -> Picked:
    versions = memory.versions_of(theirs)
    return Picked(Unknown(lambda fid: versions.get(fid, ())), None, why)
