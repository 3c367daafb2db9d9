"""flowctl stats --prometheus: valid text exposition, counters and gauges typed right."""

from __future__ import annotations

from flowd_client.cli.metrics import COUNTERS, GAUGES, exposition
from prometheus_client.parser import text_string_to_metric_families

STATS = {"flows": 3, "revision": 17, "snapshot_revision": 15, "snapshot_lag_revisions": 2,
         "file_revision": 4, "journal": {"bytes": 1234, "segments": 2, "durability": "strict"},
         "clients_last_minute": 1, "started": 1.7e9, "commits": 10, "committed_records": 12,
         "commit_seconds": 0.01, "retried_writes_answered": 1, "journal_appended_bytes": 999,
         "journal_failures": 0, "requests": {"ping": 5, "add_flow": 3},
         "errors": {"NOT_FOUND": 2, 'we"ird\\': 1},
         "snapshot": {"count": 2, "failures": 0, "last_seconds": 0.002, "last_bytes": 800,
                      "last_paced_seconds": 0.001, "last_cpu_seconds": 0.001,
                      "cpu_seconds": 0.002,
                      "last_at": 1.7e9, "last_error": None},
         "process": {"rss_bytes": 10 << 20, "cpu_user_seconds": 1.5, "cpu_system_seconds": 0.5,
                     "threads": 4, "pid": 1}}


def families(text: bytes) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text.decode())}


def test_every_stat_is_a_typed_flowd_metric() -> None:
    text = exposition(STATS, "0.1.0")
    got = families(text)
    assert all(name.startswith("flowd_") for name in got)
    assert got["flowd_up"].samples[0].value == 1
    for name, _, _ in GAUGES:
        assert got[f"flowd_{name}"].type == "gauge", name
    for name, _, _ in COUNTERS:
        assert got[f"flowd_{name}"].type == "counter", name
    requests = {s.labels["op"]: s.value for s in got["flowd_requests"].samples}
    assert requests == {"ping": 5, "add_flow": 3}
    errors = {s.labels["code"]: s.value for s in got["flowd_errors"].samples}
    assert errors['we"ird\\'] == 1  # label values are escaped and read back intact
    assert got["flowd_info"].samples[0].labels == {"version": "0.1.0"}
    lines = text.decode().splitlines()
    assert "# TYPE flowd_requests_total counter" in lines
    assert "# TYPE flowd_flows gauge" in lines
    assert any(ln.startswith("# HELP flowd_journal_bytes ") for ln in lines)


def test_down_is_up_zero_and_nothing_else() -> None:
    got = families(exposition(None))
    assert list(got) == ["flowd_up"] and got["flowd_up"].samples[0].value == 0


def test_curve_requests_per_key_name() -> None:
    stats = {**STATS, "curve": {"requests_by_key": {"buildbox": 7, "laptop": 2}}}
    got = families(exposition(stats, "0.1.0"))
    by_key = {s.labels["key"]: s.value for s in got["flowd_curve_requests"].samples}
    assert by_key == {"buildbox": 7, "laptop": 2}
    assert "flowd_curve_requests" not in families(exposition(STATS, "0.1.0"))
