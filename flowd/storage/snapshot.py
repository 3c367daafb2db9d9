"""flows.json snapshots: encode from a consistent view, install atomically.

The flows are already encoded (the store holds each as its line of the file):
writing joins them in chunks, so a background writer never holds the GIL for
long and the loop keeps answering between chunks. Installing takes the same
``flock`` on flows.json that the pre-daemon tools take, checks that the file
is still the one flowd wrote (else a stray writer was here and the caller
merges first), keeps the previous generation as ``flows.json.prev`` and
replaces the file.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .evidence import keep_aside
from .fsio import IO, fsync_dir, release, write_new
from .lines_file import Encoded
from .ownfiles import PlantedFileError, fresh_name, open_own
from .pacing import Pacer

log = logging.getLogger("flowd.snapshot")

SNAPSHOT = "flows.json"
PREVIOUS = "flows.json.prev"
#: hard link to the flows.json flowd last wrote: tells a foreign rewrite apart at start
WRITTEN = ".flows.json.written"
#: bytes of a snapshot written between flushes (bounds the writeback a journal fsync
#: can queue behind: paced strict writes at 100k flows, p99 22 ms with 8 MiB, 16 with 2)
FLUSH_EVERY = 2 << 20
#: the same, for a paced snapshot (flowd.storage.pacing): it has the time for smaller
#: flushes, and a journal fsync that meets one waits less. Its pieces are left to the
#: journal's flushes, each written just after one: 1 MiB then costs the journal's fsyncs
#: less than 256 KiB pieces flushed on their own did (flowd.storage.pacing)
PACED_FLUSH_EVERY = 1 << 20
#: a paced snapshot frees the superseded generation this many times as fast as it
#: writes (a step of freeing costs the disk less than writing as much)
RELEASE_SPEEDUP = 4

Fingerprint = tuple[int, int, int]


def fingerprint(st: os.stat_result) -> Fingerprint:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass
class View:
    """What a snapshot holds: the lines of the flows by id, in creation order (the
    snapshot writer's replica of the store, sharing the store's immutable lines)."""

    lines: Mapping[str, bytes]
    current_flow_id: str | None
    revision: int
    file_revision: int
    meta_extra: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    #: the store's changes the replica (``lines``, a dict then) has not applied yet
    pending: list[tuple[str, bytes | None]] | None = None
    #: ids changed since the last file the memory of written files remembered
    #: (catch_up adds the pending ones); None: not known, every flow may have
    changed: set[str] | None = None

    @property
    def size(self) -> int:
        return len(self.lines)

    def catch_up(self) -> None:
        """Apply the pending changes to the replica, in the snapshot thread: the loop
        hands over only what changed since the last snapshot, never the whole store."""
        replica, pending = self.lines, self.pending
        if pending is None:
            return
        assert isinstance(replica, dict)
        for fid, line in pending:
            if line is None:
                replica.pop(fid, None)
            else:
                replica[fid] = line
        if self.changed is not None:
            self.changed.update(fid for fid, _ in pending)
        self.pending = None


def encode(view: View) -> Encoded:
    """flows.json for a view (:mod:`.lines_file`): iterate it, then patch its check."""
    return Encoded(view)


class StrayWriterDetected(Exception):
    """flows.json is not the file flowd last wrote: merge before overwriting it."""


@dataclass
class Installed:
    bytes: int
    seconds: float
    #: the replaced flows.json became flows.json.prev
    rotated: bool = True
    #: of ``seconds``, the time the pacer held the writer back
    slept: float = 0.0


class SnapshotFiles:
    """The data dir's flows.json, its previous generation and the temp file."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.path = directory / SNAPSHOT
        #: the temp file of the snapshot being written (a fresh name each time)
        self.tmp = fresh_name(self.path)
        self.known: Fingerprint | None = None
        #: what becomes flows.json.prev at the next install: flows.json, or while that is
        #: not a file flowd wrote (a stray tool's, garbage) the last one flowd wrote
        #: (WRITTEN), or None when neither can be trusted (the older generation stays)
        self.rotate_from: str | None = SNAPSHOT
        #: the replaced flows.json.prev, held under a temp name until it is released
        self.superseded: Path | None = None

    def current_fingerprint(self) -> Fingerprint | None:
        try:
            return fingerprint(os.stat(self.path))
        except FileNotFoundError:
            return None

    def changed_behind_our_back(self) -> bool:
        return self.known is not None and self.current_fingerprint() != self.known

    def write(self, view: View, pacer: Pacer | None = None) -> Installed:
        """Encode, write and install a snapshot; raises StrayWriterDetected or OSError.
        ``pacer``: hold the writing to its rate (a background snapshot)."""
        t0 = time.perf_counter()
        self.tmp = fresh_name(self.path)
        try:  # a failed write (disk full) must not leave a partial temp file holding space
            enc = encode(view)
            st = write_new(self.tmp, enc, patch=enc.patch, flushed=pacer,
                           flush_every=FLUSH_EVERY if pacer is None else PACED_FLUSH_EVERY,
                           flushes=pacer.flushes if pacer is not None else None)
            fp, rotated = self._install(fingerprint(st))
        except BaseException:
            self._discard_tmp()
            raise
        finally:
            self._release_superseded(pacer)
        self.rotate_from = SNAPSHOT
        return Installed(fp[1], time.perf_counter() - t0, rotated,
                         pacer.slept if pacer is not None else 0.0)

    def _release_superseded(self, pacer: Pacer | None = None) -> None:
        """Free the generation the rotation replaced (flowd.storage.fsio.release: a slice
        at a time, so that no fsync on the disk waits behind one big free)."""
        held, self.superseded = self.superseded, None
        if held is not None:
            pace = pacer.phase(pacer.rate * RELEASE_SPEEDUP) if pacer is not None else None
            try:
                release(held, pace)
            except OSError as exc:  # its name is gone: the blocks go when its fd closes
                log.warning("could not free the superseded %s step by step: %s",
                            PREVIOUS, exc)

    def _discard_tmp(self) -> None:
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass

    def _install(self, fp: Fingerprint) -> tuple[Fingerprint, bool]:
        """Put the temp file (fingerprint ``fp``) in place of flows.json."""
        try:
            fd = open_own(self.path)
        except FileNotFoundError:
            if self.known is not None:
                log.warning("flows.json disappeared behind flowd's back; writing it again")
            IO.replace(self.tmp, self.path)
            return self._written(fp), False
        except PlantedFileError as exc:  # a link or FIFO where flows.json was: never through it
            aside = keep_aside(self.path, "foreign", move=True)
            log.warning("%s; moved it aside as %s and wrote flows.json again", exc, aside.name)
            IO.replace(self.tmp, self.path)
            return self._written(fp), False
        try:
            self._lock(fd)
            # the old tools replace flows.json while holding the lock of the old inode:
            # what we locked must still be the file at the path, and the one we wrote
            if self.known is not None and (fingerprint(os.fstat(fd)) != self.known
                                           or self.current_fingerprint() != self.known):
                raise StrayWriterDetected(str(self.path))
            rotated = self._rotate()
            IO.replace(self.tmp, self.path)
            return self._written(fp), rotated
        finally:
            os.close(fd)  # closing drops the flock

    def _rotate(self) -> bool:
        """Keep the previous generation as flows.json.prev; False if there was none. The
        generation it replaces keeps a temp name until the snapshot is installed."""
        src = self.dir / self.rotate_from if self.rotate_from else None
        if src is None or not src.exists():
            return False
        held = fresh_name(self.dir / PREVIOUS)
        try:
            IO.link(self.dir / PREVIOUS, held)
            self.superseded = held
        except OSError:  # none yet, or it cannot be held: the rename frees it at once
            pass
        self._link_as(src, PREVIOUS)
        return True

    def _written(self, fp: Fingerprint) -> Fingerprint:
        """flows.json is now ours (``fp``, taken from the temp file before the rename):
        remember it first, so that a failure below is not later mistaken for a stray
        writer's file, then link it and make the directory durable."""
        self.known = fp
        self._link_as(self.path, WRITTEN)
        fsync_dir(self.dir)
        return fp

    def _link_as(self, src: Path, name: str) -> None:
        """Point ``name`` at ``src``'s inode, atomically (hard link + rename)."""
        link_tmp = fresh_name(self.dir / name.lstrip("."))
        IO.link(src, link_tmp)
        try:
            IO.replace(link_tmp, self.dir / name)
        except OSError:
            link_tmp.unlink(missing_ok=True)
            raise

    @staticmethod
    def _lock(fd: int, timeout: float = 5.0) -> None:
        """The pre-daemon tools flock flows.json while they rewrite it: wait them out."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise OSError("flows.json is locked by another program") from None
                time.sleep(0.01)
