"""The daemon's resource bounds: memory held for others, and file descriptors.

Memory: every queue or window that holds data for someone else is bounded in
bytes (:class:`Limits`, the settings of the same names; README, Limits).
ZeroMQ bounds its queues in messages, so the server counts a message as one
slot of :data:`QUEUE_SLOT_BYTES` per started slot (see flowd.loop).

File descriptors: each connection costs one. libzmq aborts the whole process
when accept() fails with EMFILE on an ipc listener, so the daemon raises its
soft limit to the hard one at start and stops accepting (:class:`FdGuard`)
well before the limit, instead of dying at it.
"""

from __future__ import annotations

import logging
import os
import resource
from dataclasses import dataclass

log = logging.getLogger("flowd.limits")

KiB, MiB = 1 << 10, 1 << 20
#: the unit in which queued messages are counted against a byte bound
QUEUE_SLOT_BYTES = 64 * KiB


@dataclass(frozen=True)
class Limits:
    """Memory bounds in bytes, the settings of the same names (``Config.slice``; the
    defaults, in flowd.config, sum to 224 MiB with one slow client and one slow
    watcher; each further one that never reads adds its queue bound)."""

    history_bytes: int
    retry_keys_bytes: int
    reply_page_bytes: int
    peer_queue_bytes: int
    subscriber_queue_bytes: int

    def slots(self, queue_bytes: int) -> int:
        """A byte bound as a ZeroMQ high-water mark (messages of one slot each)."""
        return max(2, queue_bytes // QUEUE_SLOT_BYTES)


def raise_nofile() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit (systemd's default soft limit, 1024, is
    below what many idle clients need); returns (soft, hard) in effect."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError) as exc:  # a seccomp filter, or an infinite hard limit
            log.info("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return soft, hard


def open_fds() -> int:
    """File descriptors open in this process now (Linux: /proc/self/fd)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # minus the one listdir used
    except OSError:
        return 0


class FdGuard:
    """When to stop and restart accepting connections, with hysteresis.

    ``margin`` keeps room for the listen backlog (connections the kernel already
    queued are still accepted after the pause), for the accepts that happen
    before the loop reacts, and for the daemon's own files (journal, snapshot).
    Measured under a flood of 600 connections at a limit of 400: the pause came at
    272 and the count peaked at 291-322 (the backlog is 32).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.margin = max(128, limit // 4)
        self.pause_at = limit - self.margin
        self.resume_at = limit - 2 * self.margin
        self.paused = False
        self.pauses = 0
        self.open = 0
        self.peak = 0

    def update(self, fds: int) -> str | None:
        """"pause", "resume" or None for the file descriptors open now."""
        self.open = fds
        self.peak = max(self.peak, fds)
        if not self.paused and fds >= self.pause_at:
            self.paused = True
            self.pauses += 1
            return "pause"
        if self.paused and fds <= self.resume_at:
            self.paused = False
            return "resume"
        return None

    def as_dict(self) -> dict[str, int | bool]:
        return {"open": self.open, "limit": self.limit, "pause_at": self.pause_at,
                "accepting": not self.paused, "pauses": self.pauses, "peak": self.peak}
