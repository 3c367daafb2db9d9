"""The daemon's parts wired together, without sockets or file I/O of its own (that
is under flowd.storage): lock, recovery, store, request handler.

:meth:`Daemon.open` is start-up up to "ready to serve"; the loop then calls the
small methods here when its timers (flowd.timers) say so, and
:meth:`Daemon.close` is the orderly end (final snapshot, journal closed, lock
released).
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import time
from typing import Any

from flowd_client.discovery import EVENTS_SOCKET_NAME, SOCKET_NAME
from flowd_client.gc_pause import gc_paused

from . import __version__
from .backend import make_backend
from .bases import FileMemory
from .config import Config
from .curve_keys import AllowList, Gate
from .heap import release_free_memory
from .history import build_event
from .limits import Limits
from .load_child import load_in_child
from .logsetup import RateLimitedLogger
from .pending import Out
from .request_handler import RequestHandler
from .snapshotter import Snapshotter
from .storage.curve_files import ServerKeys, read_client_keys, server_keys
from .storage.journal import Journal
from .storage.lock import DataDirLock
from .storage.ownfiles import claim_dir, remove_stale_temps
from .storage.recovery import Recovery, recover, snapshot_exists, written_fingerprint
from .storage.runtime_dir import claim_runtime_dir, socket_endpoint
from .storage.snapshot import SNAPSHOT, WRITTEN, SnapshotFiles, View
from .storage.stray_files import file_fingerprint
from .storage.watch import DirWatch
from .store import INDEX_STEP, Store
from .stray import Strays

log = logging.getLogger("flowd")
failing_log = RateLimitedLogger(log, interval=10.0, burst=1)

class Daemon:
    """The one place where the settings reach their components (each takes its
    slice of the Config; the loop reads ``config`` for its socket options)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.data_dir = config.data_dir
        self.socket_gid = config.socket_gid
        self.limits = config.slice(Limits)
        self.lock = DataDirLock(self.data_dir, self.socket_gid)
        self.store = Store()
        self.journal = Journal(self.data_dir, config.durability)
        files = SnapshotFiles(self.data_dir)
        self.memory = FileMemory(self.data_dir)
        self.snap = Snapshotter(files, self.journal, interval=config.snapshot_interval,
                                max_journal_bytes=config.journal_max_bytes,
                                rate=config.snapshot_rate,
                                take_number=self.memory.take_number,
                                remember=self._remember_written)
        self.endpoint = config.endpoint or socket_endpoint(self.data_dir, SOCKET_NAME)
        self.events = config.events_endpoint or socket_endpoint(self.data_dir,
                                                                EVENTS_SOCKET_NAME)
        self.backend = make_backend(config, self.journal)
        self.service = RequestHandler(
            self.store, self.journal, self.snap, history=config.history,
            info={"events": self.events, "server": __version__, "pid": os.getpid(),
                  "data_dir": str(self.data_dir), "backend": config.backend},
            max_request_bytes=config.max_request_bytes, limits=self.limits,
            backend=self.backend)
        self.strays = Strays(self.service, self.snap, self.memory, self.data_dir)
        self.service.stray_stats = self._stray_stats
        self.watch: DirWatch | None = None
        #: flows.json may have changed (an inotify event) while a snapshot ran
        self._stray_suspected = False
        #: with --curve-dir: the server key pair, the allow-list gate, DIR/clients' watch
        self.curve_keys: ServerKeys | None = None
        self.gate: Gate | None = None
        self.clients_watch: DirWatch | None = None

    # ------------------------------------------------------------ start

    def open(self) -> Recovery:
        """Claim and lock the data dir, load the store. Raises DataDirRefused (not
        flowd's dir), PlantedFileError (a link, FIFO or foreign file where flowd
        expects its own), DataDirBusy (another daemon has it) or OSError."""
        self.lock.acquire(claim_dir(self.data_dir, gid=self.socket_gid))
        claim_runtime_dir(self.data_dir, (self.endpoint, self.events), self.socket_gid)
        removed = remove_stale_temps(self.data_dir)
        if removed:
            log.info("removed %d temp file(s) left by an earlier run: %s", len(removed),
                     ", ".join(removed))
        self.watch = DirWatch.open(self.data_dir)
        self._open_curve()
        if self.config.backend == "etcd":
            return self._open_etcd()
        # the start's own garbage (argparse's, the imports') collected while the heap is
        # small; then the store and the memory of written files (the store is keyed by
        # its id strings), loaded with the GC paused and frozen by recover before it is
        # back: a young pass walked the sidecar's decode (15 ms at 1M flows) and, at
        # the pause's end, the whole store (44 ms; 1.4 s before the GC was paused).
        # The memory is loaded when the loader asks for its ids: once the child that
        # checks flows.json's lines is forked, so that its load (0.28 s at 1M flows)
        # runs beside that check, not before it
        gc.collect()
        with gc_paused():
            memory_ids = functools.cache(self._loaded_memory_ids)
            rec = recover(self.data_dir, self.store, self.journal, memory_ids,
                          lambda path: load_in_child(path, self.data_dir))
            memory_ids()  # not asked for (no file, or one parsed): loaded now
        snap = self.snap
        known = written_fingerprint(self.data_dir)
        if rec.foreign:  # flowd's last file, so that the tool's counts as changed until merged
            known = file_fingerprint(self.data_dir / WRITTEN)
        on_disk = rec.source == SNAPSHOT
        snap.start_from(known, WRITTEN if rec.foreign else {SNAPSHOT: SNAPSHOT,
                                                            WRITTEN: WRITTEN}.get(rec.source),
                        max(self.store.revision - rec.replayed, 0) if on_disk else -1,
                        rec.file_revision)
        self._load_memory(rec)
        self._seed_feed(rec)
        self.service.stats.load = rec.summary()
        log.info("loaded %d flows at revision %d in %.3f s (%s, %d journal records replayed)",
                 len(self.store), self.store.revision, rec.seconds, rec.source, rec.replayed)
        self.snap.prime(self.store, {fid for r in rec.records for _, fid, _ in r["changes"]})
        # the same for the memory of written files and the snapshot's replica: the store
        # and they are acyclic, the cyclic GC has nothing to find in them
        gc.freeze()
        if rec.foreign:
            self.strays.absorb_waiting()
        if rec.needs_snapshot or not snapshot_exists(self.data_dir) or rec.foreign:
            self._snapshot_now()
        elif rec.replayed or rec.read != "lines":
            # a file not in flowd's own layout is rewritten soon (not before serving):
            # the next start reads it by its lines
            snap.note_change(time.monotonic())
        release_free_memory()
        return rec

    def _loaded_memory_ids(self) -> list[str]:
        """The memory of written files loaded, and the ids of the file it remembers last
        (the store is keyed by those very strings where the file holds them)."""
        self.memory.load()
        return self.memory.ids()

    def _open_etcd(self) -> Recovery:
        """The store of record is etcd: the mirror is loaded from it, flows.json is
        this host's readable copy (a tool's rewrite of it is merged into etcd)."""
        t0 = time.monotonic()
        self.backend.load(self.store)  # type: ignore[attr-defined]
        self.memory.load()
        self.strays.load_conflicts()
        self.snap.start_from(written_fingerprint(self.data_dir), WRITTEN, -1, 0)
        self.service.history.floor = self.store.revision
        rec = Recovery(source="etcd", seconds=time.monotonic() - t0)
        self.service.stats.load = rec.summary()
        log.info("loaded %d flows at etcd revision %d in %.3f s from %s (prefix %s)",
                 len(self.store), self.store.revision, rec.seconds,
                 ", ".join(self.config.etcd_endpoints), self.config.etcd_prefix)
        self._snapshot_now()
        return rec

    def on_backend(self) -> None:
        """The etcd watch brought other hosts' writes (the loop was woken for it)."""
        take = getattr(self.backend, "take", None)
        if take is not None:
            self.service.apply_remote(take())
            if getattr(self.backend, "needs_resync", False):
                self._resync()

    def _resync(self) -> None:
        """The watch fell behind etcd's compaction: take the whole state again, as one
        change (watchers see it as one revision), and follow from there."""
        backend: Any = self.backend
        try:
            record = backend.snapshot_record(self.store)
        except Exception as exc:  # noqa: BLE001 - tried again on the next wake
            failing_log.error("resync", "etcd resync failed: %s", exc)
            return
        backend.needs_resync = False
        if record["rev"] > self.store.revision:
            self.service.apply_durable(record, record["rev"])
        backend.follow_from(record["read_at"] + 1)

    def _open_curve(self) -> None:
        """The key pair (made on first start) and the allow-list; raises CurveDirRefused."""
        curve_dir = self.config.curve_dir
        if curve_dir is None:
            return
        self.curve_keys = keys = server_keys(curve_dir)
        log.info("CURVE on tcp endpoints: server public key %s (%s %s/server.key)",
                 keys.public.decode("ascii"), "created" if keys.created else "from", curve_dir)
        self.gate = Gate()
        self.service.curve_stats = self.gate.stats
        self.reload_allow_list()
        self.clients_watch = DirWatch.open(curve_dir / "clients")

    def reload_allow_list(self) -> None:
        """Read DIR/clients again (SIGHUP, or its watch saw a change); bad files skipped."""
        if self.gate is None or self.config.curve_dir is None:
            return
        files, problems = read_client_keys(self.config.curve_dir)
        allow, more = AllowList.parse(files)
        for line in problems + more:
            log.warning("curve allow-list: %s", line)
        added, removed = self.gate.replace(allow)
        log.info("curve allow-list: %d key(s) allowed (%d added, %d removed)",
                 len(allow.names), added, removed)

    def on_clients_event(self) -> None:
        if self.clients_watch is not None and self.clients_watch.changed():
            self.reload_allow_list()

    def _load_memory(self, rec: Recovery) -> None:
        """The file just loaded in the memory of written files (see adopt_loaded)."""
        self.memory.note_number(rec.file_revision)
        if rec.source != "empty":
            self.memory.adopt_loaded(rec.file_revision, rec.base_revision, rec.base_current,
                                     rec.base_flows, rec.base_digests)
        rec.base_flows, rec.base_digests = {}, None
        self.memory.note_shared(self.store.flows.lines)
        self.strays.load_conflicts()

    def _remember_written(self, view: View) -> None:
        self.memory.remember_written(view.file_revision, view.revision, view.current_flow_id,
                                     view.lines, view.changed)

    def _stray_stats(self) -> dict[str, Any]:
        return {"stray_conflicts": self.strays.open_conflicts(),
                "file_memory": self.memory.stats(),
                "stray_watch": "inotify" if self.watch is not None else "stat every second"}

    def _seed_feed(self, rec: Recovery) -> None:
        """Replayed records back the change feed and the retry-key window after a restart."""
        svc = self.service
        svc.history.floor = self.store.revision - rec.replayed
        for record in rec.records:
            svc.history.add(build_event(record, self.store))
        for key, result, rev in rec.keys:
            svc.keys.put(tuple(key), True, result, rev)

    def advertise(self) -> None:
        """Tell clients where we listen (after the sockets are bound)."""
        self.lock.write({"pid": os.getpid(), "started": time.time(), "endpoint": self.endpoint,
                         "events": self.events, "version": __version__,
                         "data_dir": str(self.data_dir), "curve": self.gate is not None})

    # ------------------------------------------------------------ timers

    def collect_snapshot(self) -> Out:
        out = self.snap.finish()
        if out is None:
            return []
        if out.stray:
            log.warning("flows.json was rewritten by another program during a snapshot")
            self.check_stray(force=True)
            return []
        if self._stray_suspected:
            self.check_stray()
        if out.installed is None:
            return self.service.answer_savers(None)
        return self.service.answer_savers(out.view.revision)

    def check_stray(self, force: bool = False) -> None:
        """Merge flows.json if someone else rewrote it (never while a snapshot runs:
        then the check comes again when it is collected)."""
        if self.snap.busy or self.strays.busy:
            self._stray_suspected = True
            return
        self._stray_suspected = False
        if force or self.snap.files.changed_behind_our_back():
            self.strays.begin()

    def on_dir_event(self) -> None:
        """The data dir's inotify fd is readable (the server loop polls it)."""
        if self.watch is not None and self.watch.flows_json_touched():
            self.check_stray()

    def maybe_snapshot(self, now: float) -> None:
        waited_for = bool(self.service.save_waiters)
        if self.snap.busy and (waited_for or self.snap.journal_full()):
            self.snap.hurry()  # a forced save waits for the file, or the journal outgrows it
        if (waited_for and not self.snap.busy) or self.snap.due(now):
            self.check_stray()
            if self.strays.failing or self.strays.busy:
                return  # the tool's file is not merged yet: never write over it
            # paced unless someone waits for it, or the journal grows faster than that
            self.snap.start(self.store, paced=not waited_for and not self.snap.journal_full())

    def index_names(self) -> None:
        """The loop's turn for a load's names index: one step (and one of the memory of
        written files' newest map, when the restart left it packed). Once the index is
        complete, it is frozen out of the cyclic GC's reach like the store (the first
        snapshot's collection walked it: a 28 ms gen2 pass at 1M flows), and what its
        steps freed goes back to the system, as after the load (55 MiB at 1M flows)."""
        if self.store.indexing:
            self.store.index_step(INDEX_STEP)
            if not self.store.indexing:
                gc.freeze()
                release_free_memory()
        elif self.memory.settling:
            self.memory.settle_step()
            if not self.memory.settling:  # its build's freed pages back too
                release_free_memory()

    def next_deadline(self, now: float) -> float | None:
        """When the loop must tick for the daemon's own work: a stray merge's next step,
        the names index's or the memory's newest map's at once, else the next snapshot."""
        if self.strays.ready or self.store.indexing or self.memory.settling:
            return now
        return self.snap.next_deadline(now)

    def sync_journal(self) -> None:
        try:
            self.journal.sync()
        except OSError as exc:
            log.error("journal fsync failed: %s", exc)

    def _snapshot_now(self) -> bool:
        out = self.snap.write_now(self.store)
        if out.stray:
            self.check_stray(force=True)
            out = self.snap.write_now(self.store)
        return out.installed is not None

    # ------------------------------------------------------------ stop

    def check_lock(self) -> None:
        """flowd.lock still ours? (someone may have removed it; the dir stays locked)"""
        try:
            note = self.lock.check()
        except OSError as exc:
            failing_log.error("lock", "flowd.lock is not flowd's any more and could not be "
                              "put back yet: %s", exc)
            return
        if note:
            log.warning("%s", note)

    def close(self) -> bool:
        """Final snapshot if anything changed since the last; True if all is on disk.

        Every step is tried even if an earlier one failed (a read-only or full disk):
        each failure is one line in the log, and the journal still holds every change."""
        ok = True
        self.snap.wait()
        if (self.store.revision != self.snap.installed_rev or self.service.save_waiters
                or self.snap.dirty_since is not None):
            try:
                ok = self._snapshot_now()
            except OSError as exc:
                log.error("final snapshot: %s", exc)
                ok = False
            if not ok:
                log.error("final snapshot failed; the journal still holds every change")
        self.journal.close()
        close_backend = getattr(self.backend, "close", None)
        if close_backend is not None:
            close_backend()
        for watch in (self.watch, self.clients_watch):
            if watch is not None:
                watch.close()
        self.lock.release()
        return ok
