"""Counters the daemon keeps about itself, for the ``stats`` op and ``flowctl stats``."""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from .history import History
from .limits import Limits
from .retry_keys import RetryKeys

if TYPE_CHECKING:
    import psutil

#: a client counts as connected if it sent a request within this many seconds
CLIENT_WINDOW = 60.0
MAX_TRACKED_CLIENTS = 10_000


class Stats:
    def __init__(self) -> None:
        self.started = time.time()
        self.ops: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.retries = 0
        self.commits = 0
        self.committed_records = 0
        self.commit_seconds = 0.0
        self.journal_bytes = 0
        self.journal_failures = 0
        self.last_journal_error: str | None = None
        self.load: dict[str, Any] = {}
        self.strays: list[dict[str, Any]] = []
        self.clients: dict[bytes, float] = {}

    def count_op(self, op: str) -> None:
        self.ops[op] += 1

    def saw_client(self, identity: bytes) -> None:
        seen = self.clients
        seen[identity] = time.monotonic()
        if len(seen) > MAX_TRACKED_CLIENTS:
            self._prune(time.monotonic())

    def _prune(self, now: float) -> None:
        cutoff = now - CLIENT_WINDOW
        self.clients = {k: t for k, t in self.clients.items() if t >= cutoff}
        if len(self.clients) > MAX_TRACKED_CLIENTS // 2:  # a flood of identities: forget it
            self.clients = {}

    def count_error(self, code: str) -> None:
        self.errors[code] += 1

    def observe_commit(self, seconds: float, records: int) -> None:
        self.commits += 1
        self.committed_records += records
        self.commit_seconds += seconds

    def as_dict(self) -> dict[str, Any]:
        avg = self.commit_seconds / self.commits if self.commits else 0.0
        self._prune(time.monotonic())
        return {
            "clients_last_minute": len(self.clients),
            "uptime_seconds": round(time.time() - self.started, 3),
            "started": self.started,
            "load": self.load,
            "requests": dict(self.ops),
            "errors": dict(self.errors),
            "retried_writes_answered": self.retries,
            "commits": self.commits,
            "committed_records": self.committed_records,
            "commit_seconds": round(self.commit_seconds, 6),
            "records_per_commit": round(self.committed_records / self.commits, 2)
            if self.commits else 0.0,
            "avg_commit_seconds": round(avg, 6),
            "journal_appended_bytes": self.journal_bytes,
            "journal_failures": self.journal_failures,
            "last_journal_error": self.last_journal_error,
            "stray_merges": self.strays[-10:],
        }


_PROC: psutil.Process | None = None


def process_stats() -> dict[str, Any]:
    """RSS and CPU of the daemon (psutil); cheap enough for an on-demand op."""
    global _PROC
    if _PROC is None:
        import psutil  # noqa: PLC0415 - asked for on demand: not ~17 ms of every start

        _PROC = psutil.Process()
    with _PROC.oneshot():
        mem, cpu = _PROC.memory_info(), _PROC.cpu_times()
        return {"pid": _PROC.pid, "rss_bytes": mem.rss, "cpu_user_seconds": cpu.user,
                "cpu_system_seconds": cpu.system, "threads": _PROC.num_threads()}


def limit_report(h: History, k: RetryKeys, lim: Limits, writes_refused: int) -> dict[str, Any]:
    """Every memory bound with what it holds now (README, Limits)."""
    return {
        "history": {"events": len(h.events), "bytes": h.bytes, "max_events": h.size,
                    "max_bytes": h.max_bytes},
        "retry_keys": {"keys": len(k.replies), "bytes": k.bytes, "max_keys": k.size,
                       "max_bytes": k.max_bytes},
        "reply_page_bytes": lim.reply_page_bytes,
        "peer_queue_bytes": lim.peer_queue_bytes,
        "subscriber_queue_bytes": lim.subscriber_queue_bytes,
        "writes_refused": writes_refused}
