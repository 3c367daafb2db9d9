"""Issue 4 through real daemons: CAS, plan ops, batches, idempotent retries, watch, the
cached client, threads, fork, paging."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import zmq
from flowd_client import (
    CompactedError,
    ConflictError,
    FlowClient,
    InvalidArgumentError,
    NotFoundError,
    TooLargeError,
    UnavailableError,
    UnsupportedVersionError,
)
from flowd_client import cache as cache_module
from flowd_client.discovery import read_lock_info
from flowd_client.protocol import DEFAULT_PAGE, MAX_BATCH_OPS, PROTOCOL_VERSION, build_request
from flowd_client.protocol import unpack as unpack_reply

VISIBLE_WITHIN = 5.0  # generous bound for "another tool's write shows up" on a loaded box
MISSING = "flow_00000000"


def wait_until(pred: Callable[[], Any], timeout: float = VISIBLE_WITHIN,
               what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.005)


def revision(client: FlowClient) -> int:
    return client.ping()["revision"]


@contextmanager
def dealer(data_dir: Path) -> Iterator[zmq.Socket]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, 10_000)
    sock.connect(read_lock_info(data_dir)["endpoint"])
    try:
        yield sock
    finally:
        sock.close(0)
        ctx.term()


def recv(sock: zmq.Socket, timeout: float = 10.0) -> dict[str, Any]:
    assert sock.poll(int(timeout * 1000)), "no reply"
    return unpack_reply(sock.recv(), 1 << 30)


# ------------------------------------------------------------------ compare-and-set


def test_cas_update(client: FlowClient) -> None:
    fid = client.add_flow("a", [{"p": 1}])
    f0 = client.get_flow_by_id(fid)
    f1 = client.update_flow(fid, name="b", if_revision=f0.revision)
    assert f1.name == "b" and f1.plans == [{"p": 1}] and f1.revision > f0.revision
    before = revision(client)
    with pytest.raises(ConflictError) as err:
        client.update_flow(fid, name="lost", plans=[], if_revision=f0.revision)
    assert err.value.current_revision == f1.revision
    assert str(f0.revision) in str(err.value)
    assert client.get_flow_by_id(fid) == f1 and revision(client) == before  # nothing changed
    with pytest.raises(NotFoundError):
        client.update_flow(MISSING, name="x", if_revision=1)
    f2 = client.update_flow(fid, plans=[], if_revision=f1.revision)
    assert f2.name == "b" and f2.plans == []


def test_cas_delete(client: FlowClient) -> None:
    keep = client.add_flow("keep")
    fid = client.add_flow("x")
    rev = client.get_flow_by_id(fid).revision
    client.append_plan(fid, {"n": 1})
    before = revision(client)
    with pytest.raises(ConflictError) as err:
        client.delete_flow(fid, if_revision=rev)
    assert err.value.current_revision == client.get_flow_by_id(fid).revision != rev
    assert client.current_flow_id == fid and revision(client) == before
    assert client.delete_flow(fid, if_revision=err.value.current_revision) is True
    assert client.current_flow_id == keep
    with pytest.raises(ConflictError) as err:  # it must be there at that revision: it is not
        client.delete_flow(fid, if_revision=rev)
    assert err.value.current_revision is None
    assert client.delete_flow(fid) is False


# ------------------------------------------------------------------ plan operations


def plan_ids(client: FlowClient, fid: str) -> list[Any]:
    return [p.get("id") for p in client.get_flow_by_id(fid).plans]


def test_plan_operations(client: FlowClient) -> None:
    fid = client.add_flow("plans", [{"id": "a"}, {"id": "b"}])
    r0 = client.get_flow_by_id(fid).revision
    f = client.append_plan(fid, {"id": "c", "t": "third"})
    assert [p["id"] for p in f.plans] == ["a", "b", "c"] and f.revision == r0 + 1
    f = client.update_plan(fid, {"id": "b", "done": True}, index=1)
    assert f.plans[1] == {"id": "b", "done": True}
    f = client.update_plan(fid, {"done": False}, plan_id="c")  # keeps the plan's id
    assert f.plans[2] == {"id": "c", "done": False}
    f = client.update_plan(fid, {"id": "a", "last": 1}, index=-3)
    assert f.plans[0] == {"id": "a", "last": 1}
    f = client.move_plan(fid, 2, 0)
    assert [p["id"] for p in f.plans] == ["c", "a", "b"]
    f = client.move_plan(fid, 0, -1)
    assert [p["id"] for p in f.plans] == ["a", "b", "c"]
    f = client.remove_plan(fid, plan_id="b")
    assert [p["id"] for p in f.plans] == ["a", "c"]
    f = client.remove_plan(fid, index=-1)
    assert [p["id"] for p in f.plans] == ["a"] and f.revision == r0 + 8
    f = client.append_plan(fid, {"id": "d"}, if_revision=f.revision)
    assert plan_ids(client, fid) == ["a", "d"]


def test_plan_operation_errors_change_nothing(client: FlowClient) -> None:
    fid = client.add_flow("plans", [{"id": "a"}, {"id": "b"}])
    flow = client.get_flow_by_id(fid)
    before = revision(client)
    failing: list[tuple[Callable[[], Any], type[Exception]]] = [
        (lambda: client.update_plan(fid, {}, index=2), NotFoundError),
        (lambda: client.update_plan(fid, {}, index=-3), NotFoundError),
        (lambda: client.update_plan(fid, {}, plan_id="zz"), NotFoundError),
        (lambda: client.update_plan(fid, {}), InvalidArgumentError),
        (lambda: client.update_plan(fid, {}, index=0, plan_id="a"), InvalidArgumentError),
        (lambda: client.remove_plan(fid), InvalidArgumentError),
        (lambda: client.remove_plan(fid, index=7), NotFoundError),
        (lambda: client.remove_plan(fid, plan_id=1), NotFoundError),
        (lambda: client.move_plan(fid, 0, 2), NotFoundError),
        (lambda: client.move_plan(fid, -3, 0), NotFoundError),
        (lambda: client.append_plan(MISSING, {}), NotFoundError),
        (lambda: client.append_plan(fid, {"x": float("nan")}), InvalidArgumentError),
        (lambda: client.append_plan(fid, [1]), InvalidArgumentError),  # type: ignore[arg-type]
        (lambda: client.append_plan(fid, {}, if_revision=flow.revision + 1), ConflictError),
        (lambda: client.remove_plan(fid, index=0, if_revision=0), ConflictError),
        (lambda: client.move_plan(fid, 0, 1, if_revision=0), ConflictError),
    ]
    for call, exc in failing:
        with pytest.raises(exc):
            call()
    assert revision(client) == before and client.get_flow_by_id(fid) == flow


def test_concurrent_plan_appends_are_atomic(daemon) -> None:
    with daemon.client() as c:
        fid = c.add_flow("log")

        def work(t: int) -> None:
            with daemon.client() as mine:
                for i in range(20):
                    mine.append_plan(fid, {"t": t, "i": i})
        with ThreadPoolExecutor(4) as ex:
            list(ex.map(work, range(4)))
        plans = c.get_flow_by_id(fid).plans
        assert sorted((p["t"], p["i"]) for p in plans) == [(t, i) for t in range(4)
                                                           for i in range(20)]
        for t in range(4):  # each writer's appends keep their order
            assert [p["i"] for p in plans if p["t"] == t] == list(range(20))


# ------------------------------------------------------------------ batches


def test_batch_applies_all_under_one_revision(client: FlowClient) -> None:
    a = client.add_flow("a", [{"id": "p"}])
    b = client.add_flow("b")
    ra = client.get_flow_by_id(a).revision
    before = revision(client)
    with client.batch() as batch:
        batch.check(a, ra).check(MISSING, None)
        batch.update_flow(a, name="a2", if_revision=ra)
        batch.append_plan(a, {"id": "q"})
        batch.add_flow("c", [{"id": 1}])
        batch.delete_flow(b)
        batch.set_current(a)
        batch.remove_plan(a, plan_id="p")
    results = batch.results
    assert results is not None and len(results) == 8
    c = results[4]
    assert results[0] is True and results[1] is True and results[5] is True
    after = revision(client)
    assert after == before + 1
    flows = client.get_all_flows()
    assert list(flows) == [a, c] and client.current_flow_id == a
    assert flows[a].name == "a2" and [p["id"] for p in flows[a].plans] == ["q"]
    assert flows[a].revision == flows[c].revision == after


@pytest.mark.parametrize("bad_index", [0, 1, 3])
def test_failing_batch_changes_nothing_and_names_the_op(client: FlowClient,
                                                        bad_index: int) -> None:
    a = client.add_flow("a")
    ra = client.get_flow_by_id(a).revision
    ops: list[dict[str, Any]] = [
        {"op": "add_flow", "args": {"name": "never"}},
        {"op": "update_flow", "args": {"flow_id": a, "name": "never"}},
        {"op": "set_current", "args": {"flow_id": a}},
        {"op": "append_plan", "args": {"flow_id": a, "plan": {"never": 1}}},
    ]
    ops[bad_index] = {"op": "check", "args": {"flow_id": a, "revision": ra + 5}}
    before = (revision(client), client.get_all_flows(), client.current_flow_id)
    with pytest.raises(ConflictError) as err:
        client.commit_batch(ops)
    assert f"batch operation {bad_index} (check)" in str(err.value)
    assert err.value.data["index"] == bad_index
    # a check sees the batch's own staged changes: after op 1 updated the flow it is at the
    # batch's revision
    assert err.value.current_revision == (ra if bad_index < 2 else before[0] + 1)
    assert (revision(client), client.get_all_flows(), client.current_flow_id) == before
    assert client.find_by_name("never") == []


def test_batch_errors(client: FlowClient) -> None:
    a = client.add_flow("a")
    before = revision(client)
    with pytest.raises(NotFoundError, match=r"batch operation 1 \(update_flow\)"):
        with client.batch() as b:
            b.add_flow("never")
            b.update_flow(MISSING, name="x")
    with pytest.raises(InvalidArgumentError, match=r"ops\[1\] \(append_plan\)"):
        client.commit_batch([{"op": "add_flow", "args": {"name": "x"}},
                             {"op": "append_plan", "args": {"flow_id": a, "plan": 3}}])
    with pytest.raises(InvalidArgumentError, match="cannot be used in a batch"):
        client.commit_batch([{"op": "save", "args": {}}])
    with pytest.raises(InvalidArgumentError):
        client.commit_batch([])
    with pytest.raises(TooLargeError):
        client.commit_batch([{"op": "check", "args": {"flow_id": a, "revision": None}}]
                            * (MAX_BATCH_OPS + 1))
    with pytest.raises(RuntimeError):  # an exception in the block sends nothing
        with client.batch() as b:
            b.add_flow("never")
            raise RuntimeError("changed my mind")
    with client.batch():
        pass  # an empty batch sends nothing
    assert revision(client) == before and client.find_by_name("never") == []


def test_batch_builder_covers_every_plan_op(client: FlowClient) -> None:
    a = client.add_flow("a", [{"id": 1}, {"id": 2}])
    rev = client.get_flow_by_id(a).revision
    with client.batch() as b:
        b.update_plan(a, {"id": 1, "x": True}, index=0, if_revision=rev)
        b.move_plan(a, 0, 1)
        b.remove_plan(a, plan_id=2)
    assert client.get_flow_by_id(a).plans == [{"id": 1, "x": True}]


# ------------------------------------------------------------------ idempotent retries


def same_apart_from_id(r1: dict[str, Any], r2: dict[str, Any]) -> bool:
    return {k: v for k, v in r1.items() if k != "id"} == {k: v for k, v in r2.items()
                                                          if k != "id"}


def test_same_key_is_applied_once(daemon, client: FlowClient) -> None:
    with dealer(daemon.data_dir) as sock:
        sock.send(build_request(1, "add_flow", {"name": "once"}, key=("cid", 1)))
        r1 = recv(sock)
        sock.send(build_request(2, "add_flow", {"name": "once"}, key=("cid", 1)))
        r2 = recv(sock)
        assert r1["id"] == 1 and r2["id"] == 2 and "result" in r1
        assert same_apart_from_id(r1, r2)
        assert [f.id for f in client.find_by_name("once")] == [r1["result"]]
        # the same key answers with the first reply even if the request differs
        sock.send(build_request(3, "add_flow", {"name": "other"}, key=("cid", 1)))
        assert recv(sock)["result"] == r1["result"]
        assert client.find_by_name("other") == []
        # another client id with the same sequence is another write
        sock.send(build_request(4, "add_flow", {"name": "once"}, key=("cid2", 1)))
        assert recv(sock)["result"] != r1["result"]
        assert len(client.find_by_name("once")) == 2


def test_duplicates_in_flight_get_one_write_and_identical_replies(daemon,
                                                                  client: FlowClient) -> None:
    with dealer(daemon.data_dir) as sock:
        for rid in range(10, 15):  # sent back to back: likely in one group commit
            sock.send(build_request(rid, "add_flow", {"name": "burst"}, key=("cid", 7)))
        replies = sorted((recv(sock) for _ in range(5)), key=lambda r: r["id"])
    assert [r["id"] for r in replies] == list(range(10, 15))
    assert all(same_apart_from_id(replies[0], r) for r in replies)
    assert [f.id for f in client.find_by_name("burst")] == [replies[0]["result"]]


def test_failed_write_is_answered_with_its_first_error(daemon, client: FlowClient) -> None:
    with dealer(daemon.data_dir) as sock:
        args = {"flow_id": MISSING, "name": "x"}
        sock.send(build_request(1, "update_flow", args, key=("cid", 1)))
        r1 = recv(sock)
        sock.send(build_request(2, "update_flow", args, key=("cid", 1)))
        r2 = recv(sock)
    assert r1["error"]["code"] == "NOT_FOUND" and same_apart_from_id(r1, r2)


def test_repeated_key_reply_identical_after_other_writes(daemon, client: FlowClient) -> None:
    with dealer(daemon.data_dir) as sock:
        sock.send(build_request(1, "add_flow", {"name": "once"}, key=("cid", 1)))
        r1 = recv(sock)
        client.add_flow("someone else")
        sock.send(build_request(2, "add_flow", {"name": "once"}, key=("cid", 1)))
        r2 = recv(sock)
    assert same_apart_from_id(r1, r2)


def test_retry_key_survives_kill_and_restart(make_daemon) -> None:
    d = make_daemon(None, "--snapshot-interval", "60").start()  # the write stays journaled
    with dealer(d.data_dir) as sock:
        sock.send(build_request(1, "add_flow", {"name": "once"}, key=("cid", 1)))
        r1 = recv(sock)
    d.kill()
    d.start()
    with dealer(d.data_dir) as sock:
        sock.send(build_request(2, "add_flow", {"name": "once"}, key=("cid", 1)))
        r2 = recv(sock)
    assert r2["result"] == r1["result"]
    with d.client() as c:
        assert [f.id for f in c.find_by_name("once")] == [r1["result"]]


@contextmanager
def paused(daemon) -> Iterator[None]:
    os.kill(daemon.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(daemon.proc.pid, signal.SIGCONT)


def count_calls(obj: Any, name: str) -> list[int]:
    calls = [0]
    orig = getattr(obj, name)

    def wrapper(*a: Any, **kw: Any) -> Any:
        calls[0] += 1
        return orig(*a, **kw)
    setattr(obj, name, wrapper)
    return calls


def test_client_retries_after_timeout_and_write_applies_once(daemon) -> None:
    # three attempts of ~4 s each; the daemon is frozen for longer than one of them
    with daemon.client(timeout=12.0, retries=2) as c:
        c.ping()
        drops = count_calls(c._connection, "_drop_socket")
        out: dict[str, Any] = {}

        def write() -> None:
            try:
                out["fid"] = c.add_flow("retried")
            except Exception as exc:  # reported below
                out["error"] = exc
        with paused(daemon):
            t = threading.Thread(target=write)
            t.start()
            time.sleep(5.0)
        t.join(30)
        assert not t.is_alive() and "error" not in out, out
        assert drops[0] >= 1  # at least one attempt timed out and was resent
        assert [f.id for f in c.find_by_name("retried")] == [out["fid"]]
        time.sleep(0.3)  # a late duplicate from the first socket must not add a flow
        assert len(c.find_by_name("retried")) == 1


def test_reads_retry_too_and_budget_ends_in_unavailable(daemon) -> None:
    with daemon.client(timeout=9.0, retries=2) as c:
        c.ping()
        with paused(daemon):
            t = threading.Timer(4.0, os.kill, (daemon.proc.pid, signal.SIGCONT))
            t.start()
            assert c.get_flow_by_id(MISSING) is None  # answered by a later attempt
            t.join()
    with daemon.client(timeout=1.0, retries=2) as c:
        c.ping()
        t0 = time.monotonic()
        with paused(daemon):
            with pytest.raises(UnavailableError) as err:
                c.ping()
        assert time.monotonic() - t0 < 10
        assert "flowd.sock" in str(err.value) and "did not answer" in str(err.value)
        wait_until(lambda: retry_ping(c), what="answers again")  # and works again afterwards


def retry_ping(c: FlowClient) -> bool:
    try:
        return c.ping()["pong"] is True
    except UnavailableError:
        return False


def test_oversize_request_fails_fast_with_too_large(client: FlowClient) -> None:
    t0 = time.monotonic()
    with pytest.raises(TooLargeError):
        client.add_flow("big", [{"s": "x" * 1_000_000}] * 17)
    assert time.monotonic() - t0 < client.timeout  # refused, not timed out
    assert client.find_by_name("big") == []


# ------------------------------------------------------------------ hello


def test_hello_negotiates_version(client: FlowClient) -> None:
    info = client.hello()
    assert info["protocol"] == PROTOCOL_VERSION and info["events"].startswith("ipc://")
    with pytest.raises(UnsupportedVersionError) as err:
        client._connection.request("hello", {"version": PROTOCOL_VERSION + 1}, False)
    assert str(PROTOCOL_VERSION + 1) in str(err.value) and str(PROTOCOL_VERSION) in str(err.value)


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
    time.sleep(0.5)  # let the watch subscribe (it would catch up from history anyway)
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


# ------------------------------------------------------------------ cached client


def test_cached_reads_are_served_locally(daemon) -> None:
    with daemon.client() as plain, daemon.client(cache=True) as cached:
        ids = [cached.add_flow(f"c{i}", [{"i": i}]) for i in range(20)]
        reads = ("get_flow", "get_all_flows", "find_by_name", "get_current")
        before = {op: plain.stats()["requests"].get(op, 0) for op in reads}
        for _ in range(20):
            for i, fid in enumerate(ids):
                assert cached.get_flow_by_id(fid).plans == [{"i": i}]
            assert cached.get_flow_by_id(MISSING) is None
            assert list(cached.get_all_flows()) == ids
            assert [f.id for f in cached.find_by_name("c3")] == [ids[3]]
            assert cached.current_flow_id == ids[-1] and cached.get_current().id == ids[-1]
        after = {op: plain.stats()["requests"].get(op, 0) for op in reads}
        assert after == before
        assert cached.get_all_flows() == plain.get_all_flows()


def test_cached_read_your_writes(daemon) -> None:
    with daemon.client() as plain, daemon.client(cache=True) as cached:
        for i in range(20):
            other = plain.add_flow(f"other{i}")
            fid = cached.add_flow(f"mine{i}")
            # my write is visible at once, and so is everything committed before it
            assert cached.get_flow_by_id(fid).name == f"mine{i}"
            assert cached.get_flow_by_id(other) is not None
            assert cached.current_flow_id == fid
            f = cached.update_flow(fid, name=f"renamed{i}", if_revision=cached.get_flow_by_id(
                fid).revision)
            assert cached.get_flow_by_id(fid) == f
            assert [x.id for x in cached.find_by_name(f"renamed{i}")] == [fid]
            assert cached.find_by_name(f"mine{i}") == []
            cached.append_plan(fid, {"n": i})
            assert cached.get_flow_by_id(fid).plans == [{"n": i}]
            assert cached.set_current(other) is True and cached.current_flow_id == other
            assert cached.delete_flow(fid) is True and cached.get_flow_by_id(fid) is None
        assert cached.get_all_flows() == plain.get_all_flows()


def test_cached_sees_other_writes_within_bound(daemon) -> None:
    with daemon.client() as plain, daemon.client(cache=True) as cached:
        for i in range(10):
            fid = plain.add_flow(f"x{i}")
            wait_until(lambda fid=fid: cached.get_flow_by_id(fid), what="add visible")
            plain.update_flow(fid, name=f"y{i}")
            wait_until(lambda fid=fid, i=i: cached.get_flow_by_id(fid).name == f"y{i}",
                       what="update visible")
            wait_until(lambda fid=fid: cached.current_flow_id == fid, what="current visible")
            plain.delete_flow(fid)
            wait_until(lambda fid=fid: cached.get_flow_by_id(fid) is None,
                       what="delete visible")
        wait_until(lambda: cached.get_all_flows() == plain.get_all_flows(), what="same store")


def test_cached_client_resyncs_after_a_gap(make_daemon, monkeypatch) -> None:
    """Events lost on the way (what ZeroMQ does past the high-water mark) and history
    too short to fill the gap: the mirror must reload and converge."""
    d = make_daemon(None, "--history", "5").start()
    dropping = threading.Event()
    real_decode = cache_module.decode_event
    monkeypatch.setattr(cache_module, "decode_event",
                        lambda frames: None if dropping.is_set() else real_decode(frames))
    with d.client() as plain, d.client(cache=True) as cached:
        mirror = cached._mirror
        real_fill = mirror._fill
        mirror._fill = lambda seq: [] if dropping.is_set() else real_fill(seq)
        first = plain.add_flow("before")
        wait_until(lambda: cached.get_flow_by_id(first), what="first write")
        resyncs = mirror.resyncs
        dropping.set()
        lost = [plain.add_flow(f"lost{i}") for i in range(20)]
        time.sleep(0.2)
        assert cached.get_flow_by_id(lost[-1]) is None  # the mirror really missed them
        dropping.clear()
        last = plain.add_flow("after")
        wait_until(lambda: cached.get_flow_by_id(last), timeout=10, what="resync")
        assert mirror.resyncs > resyncs
        assert cached.get_all_flows() == plain.get_all_flows()
        assert cached.current_flow_id == last
        again = plain.add_flow("still following")
        wait_until(lambda: cached.get_flow_by_id(again), what="following after resync")


def test_cached_reload_resyncs(daemon) -> None:
    with daemon.client() as plain, daemon.client(cache=True) as cached:
        ids = [plain.add_flow(f"r{i}") for i in range(5)]
        cached._mirror.reload()
        assert list(cached.get_all_flows()) == ids
        assert cached._mirror.revision == revision(plain)


# ------------------------------------------------------------------ threads, fork


@pytest.mark.parametrize("cache", [False, True])
def test_client_shared_by_8_threads(daemon, cache: bool) -> None:
    with daemon.client(cache=cache) as shared:
        log = shared.add_flow("log")

        def work(t: int) -> list[str]:
            mine = []
            for i in range(15):
                fid = shared.add_flow(f"t{t}-{i}", [{"t": t}])
                mine.append(fid)
                got = shared.get_flow_by_id(fid)
                assert got is not None and got.name == f"t{t}-{i}"
                shared.append_plan(log, {"t": t, "i": i})
                if i % 5 == 0:
                    shared.delete_flow(mine.pop(0))
            return mine
        with ThreadPoolExecutor(8) as ex:
            kept = [fid for ids in ex.map(work, range(8)) for fid in ids]
        assert len(set(kept)) == len(kept) == 8 * 12
        flows = shared.get_all_flows()
        assert set(flows) == {log, *kept}
        plans = flows[log].plans
        assert sorted((p["t"], p["i"]) for p in plans) == [(t, i) for t in range(8)
                                                           for i in range(15)]


def child_main(c: FlowClient, parent_flow: str, w: int) -> int:
    fid = c.add_flow("from child")
    flows = c.get_all_flows()
    ok = fid in flows and parent_flow in flows and c.get_flow_by_id(fid).name == "from child"
    os.write(w, json.dumps({"fid": fid, "ok": ok}).encode())
    c.close()
    return 0 if ok else 1


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("cache", [False, True])
def test_client_survives_fork(daemon, cache: bool) -> None:
    c = daemon.client(cache=cache)
    try:
        parent_flow = c.add_flow("parent before fork")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: never return into pytest
            code = 2
            try:
                os.close(r)
                code = child_main(c, parent_flow, w)
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                os.write(w, json.dumps({"error": repr(exc)}).encode())
            finally:
                os._exit(code)
        os.close(w)
        mine = [c.add_flow(f"parent{i}") for i in range(10)]  # the parent goes on meanwhile
        deadline = time.monotonic() + 60
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("forked child hung")
            time.sleep(0.02)
        report = json.loads(os.read(r, 65536) or b"{}")
        os.close(r)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, report
        flows = wait_until(lambda: (f := c.get_all_flows()) and report["fid"] in f and f,
                           what="child's write in the parent")
        assert set(mine) <= set(flows) and parent_flow in flows
        assert c.add_flow("parent after") in c.get_all_flows()
    finally:
        c.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_cached_client_in_forked_child_follows_changes(daemon) -> None:
    """A child that only reads (current_flow_id included) still follows the parent's writes."""
    c = daemon.client(cache=True)
    try:
        a = c.add_flow("a")
        c.add_flow("b")
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    if c.current_flow_id == a and c.find_by_name("after fork"):
                        code = 0
                        break
                    time.sleep(0.01)
            finally:
                os._exit(code)
        c.set_current(a)
        c.append_plan(a, {"after": True})
        with daemon.client() as other:
            other.add_flow("after fork")
            other.set_current(a)
        _, status = os.waitpid(pid, 0)  # the child gives up after 20 s on its own
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        c.close()


# ------------------------------------------------------------------ paging


def test_paging_follows_cursors_at_one_revision(client: FlowClient) -> None:
    with client.batch() as b:
        for i in range(35):
            b.add_flow(f"p{i}")
    ids = b.results
    assert ids is not None
    conn = client._connection
    page, _ = conn.request("get_all_flows", {"limit": 10}, False)
    rev0, got, pages = page["revision"], [], 0
    client.add_flow("added between pages")  # later pages still show the first revision
    client.delete_flow(ids[20])
    for _ in range(100):
        pages += 1
        got += [f["id"] for f in page["flows"]]
        assert page["revision"] == rev0 and page["current_flow_id"] == ids[-1]
        if page["next"] is None:
            break
        cursor = page["next"]
        page, _ = conn.request("get_all_flows", {"cursor": cursor, "limit": 10}, False)
    assert got == ids and pages == 4
    with pytest.raises(NotFoundError, match="cursor"):
        conn.request("get_all_flows", {"cursor": cursor}, False)  # used up
    with pytest.raises(NotFoundError):
        conn.request("get_all_flows", {"cursor": "nope"}, False)
    with pytest.raises(InvalidArgumentError):
        conn.request("get_all_flows", {"limit": 0}, False)
    assert len(client.get_all_flows()) == 35


def test_get_all_flows_larger_than_one_page(daemon, client: FlowClient) -> None:
    ids: list[str] = []
    while len(ids) <= DEFAULT_PAGE:
        with client.batch() as b:
            for i in range(MAX_BATCH_OPS):
                b.add_flow(f"n{len(ids) + i}")
        ids += b.results or []
    assert list(client.get_all_flows()) == ids
    with daemon.client(cache=True) as cached:  # the mirror's load pages too
        assert list(cached.get_all_flows()) == ids
        assert cached.current_flow_id == ids[-1]
