"""The append-only journal: every acknowledged write is a framed record here first.

Segments are files ``journal-<seq>.jnl`` (not ``.log``: a logrotate glob for
``flowd.log`` must never catch them; segments of older versions, ``.log``, are
renamed on start); each starts with a header frame
naming the revision its first record will carry (``base``); frames as
:mod:`.frames` has them. A new segment is opened at every
snapshot start and after a failed append, so a snapshot at revision S makes
every older segment obsolete once the snapshot generation before it is gone.

A later segment's ``base`` voids records of earlier segments at or above it:
that is how a batch whose append failed is forgotten on replay, since its
writers were told it failed (the voiding segment is opened right away).

Obsolete segments stay for a short window (:data:`KEY_WINDOW_SECONDS`) so that
the retry keys of their records survive a restart.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..logsetup import RateLimitedLogger
from .evidence import keep_aside
from .frames import frame, parse_segment
from .fsio import IO, fsync_dir, write_all
from .ownfiles import create_new, read_own
from .pacing import DeviceFlushes

log = logging.getLogger("flowd.journal")
#: a full disk fails every append: one line a second, with how many were swallowed
failing_log = RateLimitedLogger(log, interval=1.0, burst=1)
_FULL = (errno.ENOSPC, errno.EDQUOT)

#: zeroed space reserved ahead of the writes, per step
PREALLOC = 1 << 20
#: a segment a snapshot made obsolete stays this long after it stopped taking records:
#: its retry keys answer a client still retrying one of its writes after a restart
KEY_WINDOW_SECONDS = 10.0
SEGMENT_SUFFIX = ".jnl"
SEGMENT_RE = re.compile(r"^journal-(\d{8})\.jnl$")
#: segments as versions before 0.13 named them; renamed on start
OLD_SEGMENT_RE = re.compile(r"^journal-(\d{8})\.log$")


def is_segment_name(name: str) -> bool:
    """A journal segment under either name (doctor reads a dir flowd has not renamed yet)."""
    return bool(SEGMENT_RE.match(name) or OLD_SEGMENT_RE.match(name))


def segment_name(seq: int) -> str:
    return f"journal-{seq:08d}{SEGMENT_SUFFIX}"


def rename_old_segments(directory: Path) -> list[str]:
    """``journal-N.log`` -> ``journal-N.jnl``; returns the names renamed.

    Each rename is atomic and the scan reads only the new names after this ran,
    so a kill between two renames leaves some of each, and the next start
    renames the rest. A ``.log`` whose new name is taken (never by flowd) is
    kept aside as evidence, not replayed twice.
    """
    renamed = []
    for p in sorted(directory.iterdir()):
        m = OLD_SEGMENT_RE.match(p.name)
        if not m:
            continue
        new = directory / segment_name(int(m.group(1)))
        if os.path.lexists(new):
            kept = keep_aside(p, "duplicate", move=True)
            log.warning("journal: %s and %s both exist; kept the old name aside as %s",
                        p.name, new.name, kept.name)
            continue
        os.rename(p, new)
        renamed.append(p.name)
    if renamed:
        fsync_dir(directory)
        log.info("journal: renamed %d segment(s) from .log to %s", len(renamed), SEGMENT_SUFFIX)
    return renamed


@dataclass
class Segment:
    path: Path
    seq: int
    base: int
    last_rev: int = 0
    size: int = 0
    #: time.monotonic() when it stopped taking records (None while active)
    closed_at: float | None = None


@dataclass
class ScanResult:
    records: list[dict[str, Any]] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    torn_bytes: int = 0
    corrupt: list[str] = field(default_factory=list)
    kept_aside: list[Path] = field(default_factory=list)


def _read_segment(path: Path, seq: int, out: ScanResult) -> tuple[Segment | None, list, bool]:
    """Records of one segment, and whether it ended in corruption."""
    data = read_own(path)  # a link or FIFO in its place: PlantedFileError, never a hang
    got = parse_segment(data)
    if got.tail == "torn":
        out.torn_bytes += len(data.rstrip(b"\0")) - got.end
        log.warning("journal %s: dropped a torn tail of %d bytes (never acknowledged)",
                    path.name, len(data.rstrip(b"\0")) - got.end)
    if got.head is None:
        if got.tail == "corrupt":
            out.corrupt.append(f"{path.name}: unreadable header")
        return None, [], got.tail == "corrupt"
    seg = Segment(path, seq, int(got.head["base"]), size=got.end)
    if got.tail == "corrupt":
        out.corrupt.append(f"{path.name}: bad record at byte {got.end} of {len(data)}")
    return seg, got.records, got.tail == "corrupt"


class Journal:
    """Owns the segments in the data dir; appends, syncs, rotates, compacts."""

    def __init__(self, directory: Path, durability: str = "strict") -> None:
        self.dir = directory
        self.durability = durability
        self.segments: list[Segment] = []
        self.fd: int | None = None
        self.active: Segment | None = None
        self.unsynced = False
        self.prealloc = True
        self.allocated = 0
        #: counted for a snapshot written beside, which leaves its flushes to them
        self.flushes = DeviceFlushes()

    # ------------------------------------------------------------ start-up

    def _segment_files(self) -> list[tuple[int, Path]]:
        found = []
        for p in self.dir.iterdir():
            m = SEGMENT_RE.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return sorted(found)

    def scan(self) -> ScanResult:
        """Read every segment in order; void records superseded by a later base.

        On corruption, that segment and all later ones are moved aside
        (evidence), and the records before the corruption are returned.
        """
        out = ScanResult()
        rename_old_segments(self.dir)
        files = self._segment_files()
        for i, (seq, path) in enumerate(files):
            seg, records, corrupt = _read_segment(path, seq, out)
            if seg is not None:
                out.records = [r for r in out.records if r["rev"] < seg.base]
                out.records.extend(records)
                seg.last_rev = records[-1]["rev"] if records else seg.base - 1
                seg.closed_at = time.monotonic()
                out.segments.append(seg)
            if corrupt:
                for _, later in files[i:]:
                    out.kept_aside.append(keep_aside(later, "corrupt", move=True))
                if seg is not None:
                    out.segments.pop()
                log.error("journal corrupt (%s): replay stops there; segments kept aside: %s",
                          "; ".join(out.corrupt), ", ".join(p.name for p in out.kept_aside))
                break
        self.segments = out.segments
        return out

    # ------------------------------------------------------------ writing

    def open_segment(self, base: int) -> None:
        """Start a new segment whose first record will carry revision ``base``."""
        self.close()
        seq = max([s.seq for s in self.segments] + [n for n, _ in self._segment_files()] + [0]) + 1
        path = self.dir / segment_name(seq)
        fd = create_new(path)
        try:
            head = frame({"journal": 1, "seq": seq, "base": base})
            write_all(fd, head)
            self.allocated = self._preallocate(fd, 0, PREALLOC, len(head))
            IO.fsync(fd)
            fsync_dir(self.dir)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        self.fd = fd
        self.active = Segment(path, seq, base, last_rev=base - 1, size=len(head))
        self.segments.append(self.active)

    def append(self, records: list[dict[str, Any]], sync: bool | None = None) -> int:
        """Append records; fsync once in strict mode. On failure nothing stays behind.

        The caller has not applied the records yet: if this raises, it drops
        them and the journal's next append goes to a fresh segment.
        """
        if self.fd is None:
            assert records, "append of nothing"
            self.open_segment(records[0]["rev"])
        assert self.active is not None and self.fd is not None
        data = b"".join([frame(r) for r in records])
        start = self.active.size
        try:
            end = start + len(data)
            if end > self.allocated:
                self.allocated = self._preallocate(self.fd, self.allocated,
                                                   max(PREALLOC, end), end - self.allocated)
            write_all(self.fd, data)
            if sync if sync is not None else self.durability == "strict":
                self._fdatasync()
            else:
                self.unsynced = True
        except OSError:
            self._abandon(start, records[0]["rev"])
            raise
        self.active.size += len(data)
        self.active.last_rev = records[-1]["rev"]
        return len(data)

    def _preallocate(self, fd: int, offset: int, length: int, need: int) -> int:
        """Reserve zeroed space ahead of the writes: overwriting allocated blocks lets
        fdatasync skip the size and extent updates (measured here: 118 -> 72 us).
        Returns the end of the reserved space (0 where the filesystem cannot).

        Near a full disk the step shrinks (halving, down to the ``need`` bytes of the
        coming write), then the write goes ahead without a reservation: a reservation
        must never refuse a record the filesystem still has room for."""
        if not self.prealloc:
            return 0
        while True:
            try:
                IO.fallocate(fd, offset, length)
                return offset + length
            except OSError as exc:
                if exc.errno == errno.EIO:
                    raise
                if exc.errno not in _FULL:
                    self.prealloc = False  # e.g. EOPNOTSUPP: plain appends then
                    return 0
                if length <= need:
                    return offset  # not even the record reserves: let the write decide
                length = max(need, length // 2)

    def _abandon(self, start: int, base: int) -> None:
        """After a failed append: cut the partial bytes if we can, never reuse the segment.

        The refused records may still reach the disk (the truncate is not
        fsynced, or it failed), so a new segment whose ``base`` voids them is
        opened now, before the writers hear "failed"; if the disk refuses that
        too, the next append opens it.
        """
        assert self.fd is not None  # only after an append to the open segment
        try:
            IO.ftruncate(self.fd, start)
        except OSError:
            failing_log.error("truncate", "journal: could not truncate a failed append; a new "
                              "segment voids it")
        self.close()
        try:
            self.open_segment(base)
        except OSError as exc:
            failing_log.error("open", "journal: could not open a new segment yet (%s); the next "
                              "append will", exc)

    def sync(self) -> None:
        if self.fd is not None and self.unsynced:
            self._fdatasync()
            self.unsynced = False

    def _fdatasync(self) -> None:
        assert self.fd is not None
        self.flushes.begin()
        IO.fdatasync(self.fd)
        self.flushes.end()

    def close(self) -> None:
        if self.fd is not None:
            try:
                self.sync()
            except OSError as exc:
                log.error("journal: final sync failed: %s", exc)
            if self.active is not None and self.allocated > self.active.size:
                try:  # give back the space reserved ahead; only zeros go
                    IO.ftruncate(self.fd, self.active.size)
                except OSError:
                    pass
            os.close(self.fd)
        if self.active is not None:
            self.active.closed_at = time.monotonic()
        self.fd = None
        self.active = None

    # ------------------------------------------------------------ compaction

    def active_bytes(self) -> int:
        return self.active.size if self.active else 0

    def total_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    def drop_through(self, rev: int, keep_seconds: float = KEY_WINDOW_SECONDS) -> int:
        """Delete segments whose records are all covered by a kept snapshot at ``rev``
        and that stopped taking records more than ``keep_seconds`` ago."""
        dropped = 0
        now = time.monotonic()
        for seg in list(self.segments):
            if seg is self.active or seg.last_rev > rev:
                continue
            if seg.closed_at is None or now - seg.closed_at < keep_seconds:
                continue
            try:
                os.unlink(seg.path)
            except FileNotFoundError:
                pass
            except OSError as exc:  # read-only: it stays, covered by the snapshot anyway
                failing_log.error("drop", "journal: could not remove %s: %s", seg.path.name,
                                  exc.strerror)
                continue
            self.segments.remove(seg)
            dropped += 1
        if dropped:
            fsync_dir(self.dir)
        return dropped
