"""Issue 4 through real daemons: watch and the change feed, history compaction, and
close() ending a watch."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flowd_client import CompactedError, FlowClient
from store_probes import revision, wait_until

# ------------------------------------------------------------------ watch

WRITER = """
import sys, time
from flowd_client import FlowClient
data_dir, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with FlowClient(data_dir, timeout=30) as c:
    for i in range(n):
        c.add_flow(f"{prefix}{i}")
        if i % 10 == 0:
            time.sleep(0.01)
"""


def start_writer(data_dir: Path, prefix: str, n: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(data_dir), prefix, str(n)])


def collect(changes: Iterator[Any], until: int) -> list[Any]:
    """Changes up to and including every change of revision ``until`` (bounded by the
    watch's idle timeout)."""
    out = []
    for ch in changes:
        out.append(ch)
        if ch.revision >= until and ch.op == "set_current":  # add_flow's last change
            break
    return out


def assert_in_order_no_gap(changes: list[Any], first: int, last: int) -> None:
    revs = [c.revision for c in changes]
    assert revs == sorted(revs), "out of order"
    assert sorted(set(revs)) == list(range(first, last + 1)), "gap or extra revision"
    keys = [(c.revision, c.op, c.flow_id) for c in changes]
    assert len(keys) == len(set(keys)), "duplicate change"


def test_watch_since_replays_history_then_follows_live(daemon, client: FlowClient) -> None:
    base = revision(client)
    pre = [client.add_flow(f"pre{i}") for i in range(6)]
    writer = start_writer(daemon.data_dir, "live", 60)
    try:
        since = base + 2
        changes = collect(client.watch(since=since, timeout=20), until=base + 6 + 60)
    finally:
        assert writer.wait(60) == 0
    assert_in_order_no_gap(changes, since + 1, base + 66)
    adds = [c for c in changes if c.op == "add_flow"]
    assert [c.flow_id for c in adds[:4]] == pre[2:]
    assert [c.flow.name for c in adds] == [f"pre{i}" for i in range(2, 6)] + [
        f"live{i}" for i in range(60)]
    assert all(c.current_flow_id == c.flow_id for c in adds)  # add makes current


def test_watch_from_now_sees_batches_and_deletes(client: FlowClient, daemon) -> None:
    a = client.add_flow("old")
    watcher = client.watch(timeout=10)
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.extend(collect_n(watcher, 4)))
    t.start()
    with daemon.client() as other:
        with other.batch() as b:
            b.add_flow("n1").update_flow(a, name="renamed")
        other.delete_flow(a)
        rev = revision(other)
    t.join(30)
    assert [(c.op, c.revision) for c in out] == [
        ("add_flow", rev - 1), ("set_current", rev - 1), ("update_flow", rev - 1),
        ("delete_flow", rev)]
    assert out[2].flow.name == "renamed" and out[3].flow is None
    assert out[3].current_flow_id == b.results[0]


def collect_n(changes: Iterator[Any], n: int) -> list[Any]:
    out = []
    for ch in changes:
        out.append(ch)
        if len(out) >= n:
            break
    return out


def test_watch_idle_timeout_ends_iteration(client: FlowClient) -> None:
    t0 = time.monotonic()
    assert list(client.watch(timeout=1.0)) == []
    assert time.monotonic() - t0 < 30


def test_watch_since_compacted_raises(make_daemon) -> None:
    d = make_daemon(None, "--history", "5").start()
    with d.client() as c:
        for i in range(20):
            c.add_flow(f"f{i}")
        rev = revision(c)
        with pytest.raises(CompactedError) as err:
            next(c.watch(since=0, timeout=5))
        assert "compacted" in str(err.value)
        with pytest.raises(CompactedError):
            next(c.watch(since=rev - 6, timeout=5))
        first = next(c.watch(since=rev - 5, timeout=5))
        assert first.revision == rev - 4


def closes_within(c: FlowClient, seconds: float = 10.0) -> bool:
    t = threading.Thread(target=c.close, daemon=True)
    t.start()
    t.join(seconds)
    return not t.is_alive()


def test_close_ends_a_suspended_watch(daemon) -> None:
    c = daemon.client()
    c.add_flow("x")
    watcher = c.watch(since=0, timeout=30)
    assert next(watcher).op == "add_flow"  # suspended with its SUB socket open
    assert closes_within(c), "close() hung on the suspended watch's socket"
    with pytest.raises(StopIteration):
        next(watcher)


def test_close_ends_a_watch_running_in_another_thread(daemon) -> None:
    c = daemon.client()
    c.add_flow("x")
    seen: list[str] = []

    def follow() -> None:
        try:
            for ch in c.watch(since=0):
                seen.append(ch.op)
            seen.append("ended")
        except Exception as exc:  # reported below
            seen.append(repr(exc))
    t = threading.Thread(target=follow, daemon=True)
    t.start()
    wait_until(lambda: len(seen) >= 2, what="watch running")
    assert closes_within(c), "close() hung on a running watch"
    t.join(10)
    assert not t.is_alive() and seen == ["add_flow", "set_current", "ended"]
