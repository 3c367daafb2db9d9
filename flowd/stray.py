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
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import filterfalse
from pathlib import Path
from typing import Any

import orjson
from flowd_client.gc_pause import gc_paused

from . import flow_lines
from .bases import FileMemory, Found
from .merge import Base, MergeResult, suspects_of, three_way_merge
from .request_handler import RequestHandler
from .snapshotter import Snapshotter
from .storage import stray_files
from .storage.loader import load_file
from .storage.migrate import CorruptFileError
from .storage.snapshot import Fingerprint
from .stray_base import Picked, number_of, pick_base
from .stray_intake import Intake, Taken
from .stray_parse import ToolFileParse

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
class _Turns:
    """The loop's time on a merge parsed off the loop, for the log line: since
    ``began`` (flows.json found changed), ``spent`` in all, ``longest`` at once."""

    began: float
    step_began: float
    spent: float = 0.0
    longest: float = 0.0

    def add(self) -> None:
        """Count the step that began at ``step_began``: it is over."""
        took = time.perf_counter() - self.step_began
        self.spent, self.longest = self.spent + took, max(self.longest, took)


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
    #: wakes the loop when a child has parsed a tool's file (None: parse in process)
    on_ready: Callable[[], None] | None = None
    intake: Intake | None = None
    _parsing: tuple[Fingerprint, Path, bool, float] = field(init=False)
    _turns: _Turns | None = None

    @property
    def failing(self) -> bool:
        return self.failures > 0

    # ------------------------------------------------------------ entry points

    def absorb(self) -> None:
        """flows.json changed behind our back: keep it, merge it, have it rewritten."""
        started = time.perf_counter()
        self.cancel()
        self._turns = None
        try:
            with gc_paused():
                got = self._held_file()
                if got is not None:
                    self._absorb_held(*got, started)
        except OSError as exc:
            self._failed(exc)

    def _absorb_held(self, fp: Fingerprint, path: Path, fresh: bool, started: float) -> None:
        """The held file (or its evidence), parsed and merged in process."""
        with gc_paused():  # a parsed file of acyclic objects: nothing to collect
            try:
                doc = load_file(path).doc
            except CorruptFileError as exc:
                if not fresh:
                    raise  # pragma: no cover - kept as evidence only once it loaded
                self._corrupt(fp, path, str(exc))
                return
            self.merge(doc, self._kept(fp, path) if fresh else path, fp, started)
            del doc  # freed before the collector runs again, not walked by it

    def begin(self) -> None:
        """:meth:`absorb`, with the tool's file parsed by a child process while the loop
        serves (:mod:`flowd.stray_parse`); in process without a loop to wake
        (``on_ready``) or when the child cannot start."""
        if self.on_ready is None:
            self.absorb()
            return
        started = time.perf_counter()
        try:
            got = self._held_file()
            if got is None:
                return
            try:
                parse = ToolFileParse(got[1], self.data_dir, self.on_ready)
            except OSError as exc:
                log.warning("could not start parsing the tool's flows.json in a child "
                            "process (%s); parsing it in the daemon", exc)
                self._absorb_held(*got, started)
                return
        except OSError as exc:
            self._failed(exc)
            return
        self.intake = Intake(self.service.store, parse, self.memory,
                             lambda: self.snap.unremembered(self.service.store))
        self._parsing = (*got, started)
        self._turns = _Turns(started, started)
        self._turns.add()

    def absorb_waiting(self) -> None:
        """:meth:`begin`, and its steps at once, this thread waiting for the child: at
        start, before the loop serves, the tool's file is parsed in a child all the same,
        so that the daemon does not keep the parse's memory (the allocator holds it)."""
        exited = threading.Event()
        self.on_ready = exited.set
        try:
            self.begin()
            if self.intake is not None:
                exited.wait()
            while self.intake is not None:  # each step takes a frame or slice, or ends it
                self.step()
        finally:
            self.on_ready = None

    @property
    def busy(self) -> bool:
        """A tool's file is being parsed or read in: no snapshot may write over it."""
        return self.intake is not None

    @property
    def ready(self) -> bool:
        """The loop has intake work for its next turn."""
        return self.intake is not None and self.intake.parse.exited

    def step(self) -> None:
        """The loop's turn for a pending intake: one step of it, or the merge at its end."""
        intake, turns = self.intake, self._turns
        if intake is None or turns is None or not intake.parse.exited:
            return
        turns.step_began = time.perf_counter()
        why = intake.parse.failure()
        try:
            done = why is None and intake.step()
        except Exception as exc:  # noqa: BLE001 - whatever it is, the daemon parses instead
            why = f"its output could not be read in: {exc!r}"
        try:
            with gc_paused():
                if why is not None:
                    log.warning("could not parse the tool's flows.json in a child process "
                                "(%s); parsing it in the daemon", why)
                    self.cancel()
                    self._turns = None
                    self._absorb_held(*self._parsing[:3], time.perf_counter())
                elif done and intake.corrupt is None and self._parsing[2]:
                    fp, held, _, began = self._parsing  # kept first, in a turn of its own
                    self._parsing = (fp, self._kept(fp, held), False, began)
                elif done:
                    self.cancel()
                    self._intake_done(intake, *self._parsing)
        except OSError as exc:
            self.cancel()
            self._failed(exc)
        except BaseException:
            self.cancel()  # never left pending: snapshots wait for it
            raise
        finally:
            turns.add()
            if self.intake is None:
                self._turns = None

    def _waited(self, started: float | None) -> str:
        """The log line's account of the requests' wait (README, Durability)."""
        now, turns = time.perf_counter(), self._turns
        if turns is not None:
            took = now - turns.step_began  # this step, so far
            spent, longest = turns.spent + took, max(turns.longest, took)
            return (f"; parsed in a child process, merged {now - turns.began:.2f} s after "
                    f"flows.json changed; requests waited {spent:.2f} s for it in all, at "
                    f"most {longest:.2f} s at once")
        return "" if started is None else f"; requests waited {now - started:.2f} s for the merge"

    def cancel(self) -> None:
        """Drop a pending intake (the stop, or a merge in process instead)."""
        if self.intake is not None:
            self.intake.parse.close()
            self.intake = None

    def _intake_done(self, intake: Intake, fp: Fingerprint, path: Path, fresh: bool,
                     started: float) -> None:
        if intake.corrupt is not None:
            self._corrupt(fp, path, intake.corrupt)
            return
        assert not fresh and intake.header is not None  # kept in a step of its own
        taken = intake.finish()
        doc = {"flows": taken.theirs, "current_flow_id": intake.header["current_flow_id"],
               "meta": {"file_revision": intake.header["file_revision"]}}
        self.merge(doc, path, fp, started, taken)

    def merge(self, doc: dict[str, Any], evidence: Path, fp: Fingerprint | None,
              started: float | None = None, taken: Taken | None = None) -> None:
        """Merge a tool's document (kept aside as ``evidence``) as one journaled change;
        ``started``: when the loop began on it (perf_counter), for the log line;
        ``taken``: its flows as lines, and what was found of them beforehand (from
        :class:`Intake`, which read them in while the loop served)."""
        store = self.service.store
        theirs = doc["flows"]
        if taken is None:
            for flow in theirs.values():
                flow.pop("revision", None)  # the loader's default: the tool never wrote one
            taken = Taken(theirs, flow_lines.unheld(store.flows.lines, theirs))
        elif taken.missing is None:
            taken.missing = list(filterfalse(theirs.lines.__contains__, store.flows.lines))
        suspects = suspects_of(store.flows, theirs, taken.candidates)
        picked = pick_base(self.memory, doc, store.flows, suspects)
        result = three_way_merge(picked.base, store.flows, store.current_flow_id, theirs,
                                 doc.get("current_flow_id"),
                                 ours_digest=self.memory.ours_digest(store.flows),
                                 new_id=store.begin().new_id, suspects=suspects,
                                 missing=taken.missing)
        revision = store.revision + 1
        report = {**result.report, "revision": revision, "base": picked.number,
                  "base_known": isinstance(picked.base, Base), "evidence": evidence.name}
        aside = self._write_losers(result, report, store.flows)  # before the journal
        if fp is not None and fp not in self.remembered:
            found = taken.found or Found(self.snap.unremembered(store))
            delta = self.memory.tool_file_delta(theirs, store.flows, suspects, found)
            self.memory.remember_absorbed(number_of(doc) or 0, revision,
                                          doc.get("current_flow_id"), delta)
            self.remembered[fp] = None
            while len(self.remembered) > MAX_TRACKED_CONFLICTS:
                del self.remembered[next(iter(self.remembered))]
        if aside is not None:
            report["aside"] = aside.name
        self._commit(result, report)
        self._done(fp, report, result, aside, picked, self._waited(started))

    # ------------------------------------------------------------ steps

    def _held_file(self) -> tuple[Fingerprint, Path, bool] | None:
        """The tool's file held under flowd's name, or its evidence from a failed attempt
        (``fresh`` False); None if flows.json is flowd's own after all, or gone."""
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
        if evidence is not None:
            return fp, evidence, False
        fp, held = stray_files.hold(self.data_dir, path)
        return fp, held, True

    def _kept(self, fp: Fingerprint, held: Path) -> Path:
        evidence = stray_files.keep(held, "stray")
        self.pending[fp] = evidence
        return evidence

    def _corrupt(self, fp: Fingerprint, held: Path, why: str) -> None:
        aside = stray_files.keep(held, "stray-corrupt")
        log.error("!!! flows.json was overwritten with an unreadable file (%s); kept as "
                  "%s; flowd writes its own state back", why, aside.name)
        self.snap.accept_foreign(fp)

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
              aside: Path | None, picked: Picked, waited: str) -> None:
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
        # the wait tells an operator why clients timed out meanwhile (README, Durability)
        log.warning("stray flows.json merged into revision %d (base %s%s): %s; conflicts %s; "
                    "skipped deletions %s; tool's file kept as %s%s%s", report["revision"],
                    picked.number, "" if report["base_known"] else f", unknown: {picked.why}",
                    counts, report["conflict_ids"], report["skipped_deletion_ids"],
                    report["evidence"], f", versions not applied in {aside.name}" if aside
                    else "", waited)

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
