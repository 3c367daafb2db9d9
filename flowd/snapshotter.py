"""When and how flows.json is rewritten: off the request path, in one background thread.

A snapshot starts when changes are older than the interval (so the file lags
the store by a bounded time), when the journal's active segment passes its
size limit, on ``save(force=True)`` and at shutdown. Starting one rotates the
journal; finishing one lets the journal drop segments that the previous
generation (``flows.json.prev``) no longer needs.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .storage.journal import Journal
from .storage.pacing import Pacer
from .storage.snapshot import (
    WRITTEN,
    Fingerprint,
    Installed,
    SnapshotFiles,
    StrayWriterDetected,
    View,
)
from .store import Store

log = logging.getLogger("flowd.snapshot")
#: a snapshot waits at least this many times as long as the last one took (its time
#: less its pacing: the disk's share, at most about a tenth)
DUTY = 9
#: ... and this many times the CPU the last one's thread used: a daemon at rest beside
#: other programs spends at most about a twentieth of a core on rewriting flows.json
CPU_DUTY = 19


@dataclass
class Outcome:
    """What a finished snapshot did; ``stray`` means nothing was written."""

    view: View
    installed: Installed | None = None
    stray: bool = False
    error: OSError | None = None
    #: CPU seconds the snapshot thread used for it (writing, remembering)
    cpu: float = 0.0


@dataclass
class SnapshotStats:
    count: int = 0
    failures: int = 0
    last_seconds: float = 0.0
    #: of the last snapshot's seconds, those its pacer held it back (not its cost)
    last_slept: float = 0.0
    #: the CPU seconds the last snapshot's thread used
    last_cpu: float = 0.0
    total_seconds: float = 0.0
    #: the CPU seconds of every snapshot's thread so far: what snapshots cost the machine
    total_cpu: float = 0.0
    last_bytes: int = 0
    last_at: float | None = None
    last_error: str | None = None

    #: snapshots since the last summary line: (count, seconds, slowest)
    window: list[float] = field(default_factory=lambda: [0, 0.0, 0.0])

    def observe(self, seconds: float, size: int, slept: float = 0.0,
                cpu: float = 0.0) -> None:
        self.count += 1
        self.last_seconds, self.last_bytes, self.last_at = seconds, size, time.time()
        self.last_slept, self.last_cpu = slept, cpu
        self.total_seconds += seconds
        self.total_cpu += cpu
        self.last_error = None
        w = self.window
        w[0], w[1], w[2] = w[0] + 1, w[1] + seconds, max(w[2], seconds)

    def summary(self) -> str | None:
        """One line for the log per interval instead of one per snapshot."""
        n, total, slowest = self.window
        if not n:
            return None
        self.window = [0, 0.0, 0.0]
        return (f"{int(n)} snapshots, {total / n:.3f} s on average, slowest {slowest:.3f} s, "
                f"last {self.last_bytes} bytes")

    def as_dict(self) -> dict[str, Any]:
        avg = self.total_seconds / self.count if self.count else 0.0
        return {"count": self.count, "failures": self.failures,
                "last_seconds": round(self.last_seconds, 4), "avg_seconds": round(avg, 4),
                "last_paced_seconds": round(self.last_slept, 4),
                "last_cpu_seconds": round(self.last_cpu, 4),
                "cpu_seconds": round(self.total_cpu, 4),
                "last_bytes": self.last_bytes, "last_at": self.last_at,
                "last_error": self.last_error}


@dataclass
class Snapshotter:
    files: SnapshotFiles
    journal: Journal
    interval: float
    max_journal_bytes: int
    #: bytes a second a background snapshot writes at most (0: no limit)
    rate: int = 0
    #: the number (meta.file_revision) of the last file installed
    file_revision: int = 0
    #: revision of the snapshot now in flows.json / in flows.json.prev
    installed_rev: int = 0
    prev_rev: int = -1
    #: hands out file numbers (flowd.bases: after every number seen, never twice)
    take_number: Callable[[], int] | None = None
    #: told of every installed file, in the snapshot thread (flowd.bases remembers it)
    remember: Callable[[View], None] | None = None
    dirty_since: float | None = None
    retry_at: float = 0.0
    stats: SnapshotStats = field(default_factory=SnapshotStats)
    on_done: Callable[[], None] | None = None
    _thread: threading.Thread | None = None
    _outcome: Outcome | None = None
    #: the snapshot thread's copy of the store's lines, and which load of the store it is of
    _replica: dict[str, bytes] | None = None
    _replica_of: int = -1
    #: ids changed since the last file remembered (None: unknown, all are digested)
    _unremembered: set[str] | None = None
    #: the running snapshot's pacer (None: it runs at full speed)
    _pacer: Pacer | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None

    def note_change(self, now: float) -> None:
        if self.dirty_since is None:
            self.dirty_since = now

    def due(self, now: float) -> bool:
        if self.busy or self.dirty_since is None or now < self.retry_at:
            return False
        return now - self.dirty_since >= self._wait() or self.journal_full()

    def journal_full(self) -> bool:
        return self.journal.active_bytes() >= self.max_journal_bytes

    def _wait(self) -> float:
        """Adaptive: never spend more than about a tenth of the time snapshotting (a
        million flows take seconds to write: not every second, whatever the interval)
        nor more than about a twentieth of a core. What a snapshot costs the disk is its
        time less its pacer's waits: paced, it writes for longer but no more, and the
        file should not lag further for that. Its CPU is counted apart: a cheaper
        snapshot then runs more often, not at the same share of the machine."""
        st = self.stats
        return max(self.interval, DUTY * (st.last_seconds - st.last_slept),
                   CPU_DUTY * st.last_cpu)

    def next_deadline(self, now: float) -> float | None:
        if self.busy or self.dirty_since is None:
            return None
        return max(self.dirty_since + self._wait(), self.retry_at)

    def view(self, store: Store) -> View:
        """The store as of now, at the cost of what changed since the last snapshot.

        The snapshot thread keeps a replica of the store's dict of lines (sharing the
        lines, immutable once stored) and applies the store's change log to it before
        writing. Copying the store instead touches every flow on the loop thread
        (a list of items: a million tuples and a 634 ms gen0 pass at 1M flows; a dict
        copy: one increment per flow, ~100 ms of cache misses at 1M)."""
        gc.collect()  # cheap: only what is younger than the last freeze (cyclic garbage)
        pending = store.changes
        if self._replica is None or self._replica_of != store.generation or pending is None:
            self.prime(store)
            pending = None
        store.changes = []
        # long-lived from here on (the replica, the flows stored since the last freeze):
        # the cyclic GC has nothing to find in them and never walks them again
        gc.freeze()
        assert self._replica is not None
        number = self.take_number() if self.take_number else self.file_revision + 1
        return View(self._replica, store.current_flow_id, store.revision, number,
                    store.meta_extra, store.extra, pending=pending, changed=self._unremembered)

    def unremembered(self, store: Store) -> set[str] | None:
        """Ids changed since the file the memory of written files remembered last (None:
        not known): what the views since found, and the store's log after them. Asked
        between snapshots only (a stray merge), when no thread adds to it."""
        if self.busy or self._unremembered is None or store.changes is None \
                or self._replica_of != store.generation:
            return None
        return self._unremembered.union(fid for fid, _ in store.changes)

    def prime(self, store: Store, changed: set[str] | None = None) -> None:
        """Copy the store's dict once per load (before serving, when called at start);
        from then on the store logs its changes for the replica. ``changed``: the ids
        changed since the file the memory of written files holds (None: unknown)."""
        self._replica = store.flows.lines.copy()
        self._replica_of = store.generation
        self._unremembered = changed
        store.changes = []

    def start(self, store: Store, paced: bool = False) -> None:
        """Capture a consistent view (the changes since the last one) and write it in the
        background; ``paced``: at most :attr:`rate` bytes a second, until hurried."""
        view = self.view(store)
        if self.journal.fd is not None:
            try:
                self.journal.open_segment(store.revision + 1)
            except OSError as exc:  # disk full: the next append opens the segment
                log.error("journal: could not open a new segment for the snapshot: %s", exc)
        self.dirty_since = None
        self._pacer = (Pacer(self.rate, self.journal.flushes)
                       if paced and self.rate > 0 else None)
        self._thread = threading.Thread(target=self._run, args=(view, self._pacer),
                                        name="snapshot",
                                        daemon=True)
        self._thread.start()

    def _run(self, view: View, pacer: Pacer | None) -> None:
        out = Outcome(view)
        cpu0 = time.thread_time()
        view.catch_up()
        try:
            out.installed = self.files.write(view, pacer)
        except StrayWriterDetected:
            out.stray = True
        except OSError as exc:
            out.error = exc
        if out.installed is not None and self.remember is not None:
            try:
                self.remember(view)
                self._unremembered = set()
            except Exception:  # the file is installed; its memory is best effort
                self._unremembered = None
                log.exception("could not remember flows.json %d", view.file_revision)
        out.cpu = time.thread_time() - cpu0
        self._outcome = out
        if self.on_done is not None:
            self.on_done()

    def hurry(self) -> None:
        """Someone waits for the running snapshot (a forced save, shutdown): no more
        pacing."""
        if self._pacer is not None:
            self._pacer.hurry()

    def wait(self) -> Outcome | None:
        self.hurry()
        if self._thread is not None:
            self._thread.join()
        return self.finish()

    def finish(self) -> Outcome | None:
        """Collect a finished snapshot (non-blocking); None while it still runs."""
        if self._thread is None or self._outcome is None:
            return None
        self._thread.join()
        self._thread = None
        out, self._outcome = self._outcome, None
        assert out is not None
        if out.installed is not None:
            self._installed(out)
        else:
            self.note_change(time.monotonic())
            if out.error is not None:
                self.stats.failures += 1
                self.stats.last_error = f"{type(out.error).__name__}: {out.error}"
                self.retry_at = time.monotonic() + 2.0
                log.error("snapshot failed (%s); flows.json stays the last good one, "
                          "the journal holds every change; retrying", self.stats.last_error)
        return out

    def _installed(self, out: Outcome) -> None:
        view, inst = out.view, out.installed
        assert inst is not None
        self.file_revision = view.file_revision
        if inst.rotated:
            self.prev_rev = self.installed_rev
        self.installed_rev = view.revision
        self.stats.observe(inst.seconds, inst.bytes, inst.slept, out.cpu)
        self.journal.drop_through(self.prev_rev)
        # every second under steady writes: INFO only when it is slow enough to matter
        level = logging.INFO if inst.seconds - inst.slept >= 1.0 else logging.DEBUG
        log.log(level, "snapshot: %d flows at revision %d, %d bytes in %.3f s (%.3f s of it "
                "paced, %.3f s of CPU)", view.size, view.revision, inst.bytes, inst.seconds,
                inst.slept, out.cpu)

    def start_from(self, known: Fingerprint | None, rotate_from: str | None,
                   installed_rev: int, file_revision: int) -> None:
        """What recovery found on disk: the fingerprint of the file flowd last wrote,
        which file becomes the previous generation, the revision flows.json holds
        (-1: it is not flowd's file) and its number."""
        self.files.known, self.files.rotate_from = known, rotate_from
        self.installed_rev, self.file_revision = installed_rev, file_revision

    def accept_foreign(self, fp: Fingerprint) -> None:
        """flows.json is a file flowd did not write and has dealt with (merged, or kept
        aside as garbage): not a change any more, but rewrite it soon, and keep
        flowd's own last file as the previous generation, not that one."""
        self.files.known = fp
        self.files.rotate_from = WRITTEN
        self.note_change(0.0)

    def file_lost(self) -> None:
        """flows.json was removed: write it again soon."""
        self.files.known = None
        self.note_change(0.0)

    def write_now(self, store: Store) -> Outcome:
        """Synchronous snapshot (start-up after migration or recovery, shutdown)."""
        self.wait()
        self.start(store)
        out = self.wait()
        assert out is not None
        return out
