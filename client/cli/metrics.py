"""``flowctl stats --prometheus``: the daemon's stats in the Prometheus text format.

Meant for node_exporter's textfile collector (a timer writes the output to
``*.prom`` atomically). prometheus_client writes the format (HELP/TYPE
lines, escaping, ``_total`` on counters); this module only says which stat
is which metric. Counters only ever grow while one daemon runs (they restart
at 0 with it, which Prometheus' rate() handles); gauges are levels.
When no daemon answers, the output is ``flowd_up 0`` (so a stale file does
not keep saying "up") and the exit code says UNAVAILABLE.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from ..errors import UnavailableError
from ..exitcodes import OK
from .context import Ctx

#: (metric name without flowd_, path in the stats document, help)
GAUGES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("flows", ("flows",), "Flows in the store."),
    ("revision", ("revision",), "Store revision (grows by one per write, batches by one)."),
    ("snapshot_revision", ("snapshot_revision",), "Store revision that flows.json holds."),
    ("snapshot_lag_revisions", ("snapshot_lag_revisions",),
     "Revisions the store is ahead of flows.json (all of them are in the journal)."),
    ("file_revision", ("file_revision",), "Writes of flows.json so far (meta.file_revision)."),
    ("journal_bytes", ("journal", "bytes"), "Bytes of records in the journal segments."),
    ("journal_segments", ("journal", "segments"), "Journal segment files."),
    ("clients_last_minute", ("clients_last_minute",),
     "Client connections that sent a request within the last minute."),
    ("start_time_seconds", ("started",), "When the daemon started (Unix time)."),
    ("snapshot_last_duration_seconds", ("snapshot", "last_seconds"),
     "How long the last snapshot took."),
    ("snapshot_last_paced_seconds", ("snapshot", "last_paced_seconds"),
     "Of that, how long --snapshot-rate held it back."),
    ("snapshot_last_cpu_seconds", ("snapshot", "last_cpu_seconds"),
     "CPU the last snapshot's thread used (the next waits at least 19 times that)."),
    ("snapshot_last_bytes", ("snapshot", "last_bytes"), "Size of the last flows.json written."),
    ("snapshot_last_time_seconds", ("snapshot", "last_at"),
     "When the last snapshot was installed (Unix time)."),
    ("process_resident_memory_bytes", ("process", "rss_bytes"), "Resident memory of flowd."),
    ("process_threads", ("process", "threads"), "Threads of flowd."),
)
#: (metric name without flowd_ and _total, path, help)
COUNTERS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("commits", ("commits",), "Group commits (one journal append and fsync each)."),
    ("committed_records", ("committed_records",), "Journal records committed."),
    ("commit_seconds", ("commit_seconds",), "Time spent in group commits."),
    ("retried_writes_answered", ("retried_writes_answered",),
     "Retried writes answered from the retry window (applied once)."),
    ("journal_appended_bytes", ("journal_appended_bytes",), "Bytes appended to the journal."),
    ("journal_failures", ("journal_failures",), "Journal appends that failed."),
    ("snapshots", ("snapshot", "count"), "Snapshots of flows.json written."),
    ("snapshot_failures", ("snapshot", "failures"), "Snapshots that failed."),
    ("snapshot_cpu_seconds", ("snapshot", "cpu_seconds"),
     "CPU the snapshot threads used, all snapshots since the start."),
)


def _get(stats: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = stats
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, (int, float)) and value is not True else None


class StatsCollector:
    """A prometheus_client collector over one stats document (``None``: daemon down)."""

    def __init__(self, stats: dict[str, Any] | None, version: str | None = None) -> None:
        self.stats, self.version = stats, version

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        yield GaugeMetricFamily("flowd_up", "1 if flowd answered flowctl, else 0.",
                                value=0 if self.stats is None else 1)
        if self.stats is None:
            return
        s = self.stats
        info = GaugeMetricFamily("flowd_info", "flowd's version.", labels=["version"])
        info.add_metric([self.version or ""], 1)
        yield info
        for name, path, text in GAUGES:
            value = _get(s, path)
            if value is not None:
                yield GaugeMetricFamily(f"flowd_{name}", text, value=value)
        for name, path, text in COUNTERS:
            value = _get(s, path)
            if value is not None:
                yield CounterMetricFamily(f"flowd_{name}", text, value=value)
        yield from self._labelled(s)

    @staticmethod
    def _labelled(s: dict[str, Any]) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        for name, key, label, text in (
                ("requests", "requests", "op", "Requests by op."),
                ("errors", "errors", "code", "Error replies by code.")):
            family = CounterMetricFamily(f"flowd_{name}", text, labels=[label])
            for value, count in sorted((s.get(key) or {}).items()):
                family.add_metric([str(value)], float(count))
            yield family
        by_key = (s.get("curve") or {}).get("requests_by_key")
        if isinstance(by_key, dict):  # only a daemon with --curve-dir has them
            family = CounterMetricFamily("flowd_curve_requests", "Requests by allowed CURVE "
                                         "key name.", labels=["key"])
            for value, count in sorted(by_key.items()):
                family.add_metric([str(value)], float(count))
            yield family
        cpu = CounterMetricFamily("flowd_process_cpu_seconds", "CPU time of flowd.",
                                  labels=["mode"])
        for mode in ("user", "system"):
            value = _get(s, ("process", f"cpu_{mode}_seconds"))
            if value is not None:
                cpu.add_metric([mode], value)
        yield cpu


def exposition(stats: dict[str, Any] | None, version: str | None = None) -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(stats, version))
    return generate_latest(registry)


def print_prometheus(ctx: Ctx) -> int:
    try:
        stats = ctx.client.stats()
        version = ctx.client.hello().get("server")
    except UnavailableError:
        sys.stdout.buffer.write(exposition(None))
        sys.stdout.flush()
        raise  # one line on stderr, exit UNAVAILABLE, and flowd_up 0 on stdout
    sys.stdout.buffer.write(exposition(stats, version))
    sys.stdout.flush()
    return OK

