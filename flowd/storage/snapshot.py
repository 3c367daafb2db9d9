"""flows.json snapshots: encode from a consistent view, install atomically.

Encoding runs in chunks of flows so that a background writer never holds the
GIL for long (orjson does not release it); the loop keeps answering between
chunks. Installing takes the same ``flock`` on flows.json that the pre-daemon
tools take, checks that the file is still the one flowd wrote (else a stray
writer was here and the caller merges first), keeps the previous generation
as ``flows.json.prev`` and replaces the file.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from .evidence import keep_aside
from .fsio import IO, fsync_dir, write_new
from .ownfiles import PlantedFileError, fresh_name, open_own

log = logging.getLogger("flowd.snapshot")

SNAPSHOT = "flows.json"
PREVIOUS = "flows.json.prev"
#: hard link to the flows.json flowd last wrote: tells a foreign rewrite apart at start
WRITTEN = ".flows.json.written"
CHUNK = 1000
#: bytes of a snapshot written between flushes (bounds the writeback a journal fsync
#: can queue behind)
FLUSH_EVERY = 8 << 20
OPT = orjson.OPT_INDENT_2

Fingerprint = tuple[int, int, int]


def fingerprint(st: os.stat_result) -> Fingerprint:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass
class View:
    """What a snapshot holds; ``items`` share the store's immutable flow dicts (a list
    of pairs, or the items of a copy of the store's dict)."""

    items: Collection[tuple[str, dict[str, Any]]]
    current_flow_id: str | None
    revision: int
    file_revision: int
    meta_extra: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    #: the snapshot writer's replica of the store that ``items`` iterates, and the
    #: store's changes it has not applied yet (see catch_up)
    replica: dict[str, Any] | None = None
    pending: list[tuple[str, Any]] | None = None
    #: how many flows the view holds
    size: int = -1

    def __post_init__(self) -> None:
        if self.size < 0 and self.pending is None:
            self.size = len(self.items)

    def catch_up(self) -> None:
        """Apply the pending changes to the replica, in the snapshot thread: the loop
        hands over only what changed since the last snapshot, never the whole store."""
        replica, pending = self.replica, self.pending
        if replica is None or pending is None:
            return
        for fid, flow in pending:
            if flow is None:
                replica.pop(fid, None)
            else:
                replica[fid] = flow
        self.pending = None
        self.size = len(replica)


def encode(view: View) -> Iterator[bytes]:
    """flows.json schema 3.0: UTF-8, 2-space indent, flows in creation order."""
    meta = {"last_saved": datetime.now().isoformat(timespec="milliseconds"),
            "file_revision": view.file_revision, "revision": view.revision, **view.meta_extra}
    head = orjson.dumps({"version": "3.0", "meta": meta,
                         "current_flow_id": view.current_flow_id}, option=OPT)
    yield head[:-2] + b',\n  "flows": {'
    items = iter(view.items)
    first = True
    while chunk := dict(itertools.islice(items, CHUNK)):
        body = orjson.dumps(chunk, option=OPT)
        # '{\n  "id": {...}\n}' -> the same members indented one level deeper
        body = body[1:-2].replace(b"\n", b"\n  ")
        yield (b"" if first else b",") + body
        first = False
    yield b"}" if first else b"\n  }"
    if view.extra:
        tail = orjson.dumps(view.extra, option=OPT)
        yield b"," + tail[1:-2]
    yield b"\n}\n"


class StrayWriterDetected(Exception):
    """flows.json is not the file flowd last wrote: merge before overwriting it."""


@dataclass
class Installed:
    bytes: int
    seconds: float
    #: the replaced flows.json became flows.json.prev
    rotated: bool = True


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

    def current_fingerprint(self) -> Fingerprint | None:
        try:
            return fingerprint(os.stat(self.path))
        except FileNotFoundError:
            return None

    def changed_behind_our_back(self) -> bool:
        return self.known is not None and self.current_fingerprint() != self.known

    def write(self, view: View) -> Installed:
        """Encode, write and install a snapshot; raises StrayWriterDetected or OSError."""
        t0 = time.perf_counter()
        self.tmp = fresh_name(self.path)
        try:  # a failed write (disk full) must not leave a partial temp file holding space
            st = write_new(self.tmp, encode(view), flush_every=FLUSH_EVERY)
            fp, rotated = self._install(fingerprint(st))
        except BaseException:
            self._discard_tmp()
            raise
        self.rotate_from = SNAPSHOT
        return Installed(fp[1], time.perf_counter() - t0, rotated)

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
        """Keep the previous generation as flows.json.prev; False if there was none."""
        src = self.dir / self.rotate_from if self.rotate_from else None
        if src is None or not src.exists():
            return False
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
