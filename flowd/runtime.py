"""The daemon's parts wired together, without sockets: lock, recovery, store, service.

:func:`open_runtime` is start-up up to "ready to serve"; the server loop then
calls the small methods here on its timers, and :meth:`Runtime.close` is the
orderly end (final snapshot, journal closed, lock released).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowd_client.discovery import EVENTS_SOCKET_NAME, SOCKET_NAME

from . import __version__
from .feed import build_event
from .limits import Limits
from .logsetup import RateLimitedLogger
from .service import Service
from .snapshotter import Snapshotter
from .storage.journal import Journal
from .storage.lock import DataDirLock
from .storage.ownfiles import claim_dir, remove_stale_temps
from .storage.recovery import Recovery, recover, written_fingerprint
from .storage.snapshot import SNAPSHOT, WRITTEN, SnapshotFiles
from .store import Store
from .stray import absorb_stray_file, merge_into, pick_base

log = logging.getLogger("flowd")
failing_log = RateLimitedLogger(log, interval=10.0, burst=1)

UNIX_PATH_MAX = 107


@dataclass
class Settings:
    data_dir: Path
    endpoint: str | None = None
    events_endpoint: str | None = None
    durability: str = "strict"
    snapshot_interval: float = 1.0
    journal_max_bytes: int = 64 << 20
    max_request_bytes: int = 16 << 20
    history: int = 10_000
    #: group allowed to connect (sockets 0660, dirs 0750); None: the owner only
    socket_gid: int | None = None
    limits: Limits = field(default_factory=Limits)


def runtime_dir(data_dir: Path) -> Path:
    """The private dir for sockets whose path under ``data_dir`` is too long."""
    digest = hashlib.sha256(os.fsencode(str(data_dir))).hexdigest()[:16]
    env = os.environ  # systemd's RuntimeDirectory= first: a service's /tmp is private
    base = env.get("RUNTIME_DIRECTORY") or env.get("XDG_RUNTIME_DIR") or "/tmp"
    return Path(base) / f"flowd-{os.geteuid()}-{digest}"


def socket_endpoint(data_dir: Path, name: str) -> str:
    """``ipc://<data_dir>/<name>``, or under :func:`runtime_dir` if too long for AF_UNIX
    (that dir is claimed, i.e. created or checked, when the daemon opens)."""
    path = data_dir / name
    if len(os.fsencode(str(path))) <= UNIX_PATH_MAX:
        return f"ipc://{path}"
    return f"ipc://{runtime_dir(data_dir) / name}"


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir
        self.max_request_bytes = settings.max_request_bytes
        self.lock = DataDirLock(self.data_dir, settings.socket_gid)
        self.store = Store()
        self.journal = Journal(self.data_dir, settings.durability)
        files = SnapshotFiles(self.data_dir)
        self.snap = Snapshotter(files, self.journal, interval=settings.snapshot_interval,
                                max_journal_bytes=settings.journal_max_bytes)
        self.endpoint = settings.endpoint or socket_endpoint(self.data_dir, SOCKET_NAME)
        self.events = settings.events_endpoint or socket_endpoint(self.data_dir,
                                                                  EVENTS_SOCKET_NAME)
        self.service = Service(self.store, self.journal, self.snap, history=settings.history,
                               info={"events": self.events, "server": __version__,
                                     "pid": os.getpid(), "data_dir": str(self.data_dir)},
                               limits=settings.limits)
        self.recovery: Recovery | None = None

    # ------------------------------------------------------------ start

    def open(self) -> Recovery:
        """Claim and lock the data dir, load the store. Raises DataDirRefused (not
        flowd's dir), PlantedFileError (a link, FIFO or foreign file where flowd
        expects its own), DataDirBusy (another daemon has it) or OSError."""
        self.lock.acquire(claim_dir(self.data_dir, gid=self.settings.socket_gid))
        self._claim_runtime_dir()
        removed = remove_stale_temps(self.data_dir)
        if removed:
            log.info("removed %d temp file(s) left by an earlier run: %s", len(removed),
                     ", ".join(removed))
        base_rev = -1
        rec = recover(self.data_dir, self.store, self.journal)
        self.recovery = rec
        snap = self.snap
        snap.files.known = written_fingerprint(self.data_dir)
        snap.files.rotate_from = ({SNAPSHOT: SNAPSHOT, WRITTEN: WRITTEN}.get(rec.source)
                                  if rec.stray is None else WRITTEN)
        if rec.source == "flows.json":
            base_rev = self.store.revision - rec.replayed
        snap.installed_rev = max(base_rev, 0) if rec.source == "flows.json" else -1
        snap.file_revision = rec.file_revision
        if rec.source != "empty":
            snap.set_base(rec.base_flows, rec.base_current, rec.file_revision,
                          self.store.revision - rec.replayed, rec.last_saved)
        self._seed_feed(rec)
        self.service.stats.load = rec.summary()
        log.info("loaded %d flows at revision %d in %.3f s (%s, %d journal records replayed)",
                 len(self.store), self.store.revision, rec.seconds, rec.source, rec.replayed)
        if rec.stray is not None:
            base_flows, base_current = pick_base(snap, self.store, rec.stray.theirs)
            merge_into(self.service, snap, self.data_dir, rec.stray.theirs,
                       base_flows, base_current, rec.stray.evidence)
        if rec.needs_snapshot or not snap.files.path.exists() or rec.stray is not None:
            self._snapshot_now()
        elif rec.replayed:
            snap.note_change(time.monotonic())
        return rec

    def _claim_runtime_dir(self) -> None:
        """The fallback dir of long socket paths follows the data dir's rules."""
        run = runtime_dir(self.data_dir)
        if any(ep.startswith(f"ipc://{run}/") for ep in (self.endpoint, self.events)):
            os.close(claim_dir(run, gid=self.settings.socket_gid, what="socket runtime dir"))

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
                         "data_dir": str(self.data_dir)})

    # ------------------------------------------------------------ timers

    def collect_snapshot(self) -> list[Any]:
        out = self.snap.finish()
        if out is None:
            return []
        if out.stray:
            log.warning("flows.json was rewritten by another program during a snapshot")
            self.check_stray(force=True)
            return []
        if out.installed is None:
            return self.service.answer_savers(None)
        return self.service.answer_savers(out.view.revision)

    def check_stray(self, force: bool = False) -> None:
        if self.snap.busy:
            return
        if force or self.snap.files.changed_behind_our_back():
            try:
                absorb_stray_file(self.service, self.snap, self.data_dir)
            except OSError as exc:
                failing_log.error("stray", "could not absorb the stray flows.json yet: %s", exc)

    def maybe_snapshot(self, now: float) -> None:
        wanted = self.service.save_waiters and not self.snap.busy
        if wanted or self.snap.due(now):
            self.check_stray()
            self.snap.start(self.store)

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
        if self.store.revision != self.snap.installed_rev or self.service.save_waiters:
            try:
                ok = self._snapshot_now()
            except OSError as exc:
                log.error("final snapshot: %s", exc)
                ok = False
            if not ok:
                log.error("final snapshot failed; the journal still holds every change")
        self.journal.close()
        self.lock.release()
        return ok
