"""Issue 4 through real daemons: idempotency keys, client retries after SIGSTOP, retry
keys across a restart, fail-fast oversize requests, hello."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import zmq
from flowd_client import (
    FlowClient,
    TooLargeError,
    UnavailableError,
    UnsupportedVersionError,
)
from flowd_client.discovery import read_lock_info
from flowd_client.protocol import PROTOCOL_VERSION, build_request
from flowd_client.protocol import unpack as unpack_reply
from store_probes import MISSING, wait_until


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


def count_calls(obj: Any, name: str, called: threading.Event | None = None) -> list[int]:
    calls = [0]
    orig = getattr(obj, name)

    def wrapper(*a: Any, **kw: Any) -> Any:
        calls[0] += 1
        if called is not None:
            called.set()
        return orig(*a, **kw)
    setattr(obj, name, wrapper)
    return calls


def test_client_retries_after_timeout_and_write_applies_once(daemon) -> None:
    # three attempts of ~4 s each; the daemon is frozen for longer than one of them
    with daemon.client(timeout=12.0, retries=2) as c:
        c.ping()
        resent = threading.Event()
        drops = count_calls(c._connection, "_drop_socket", resent)
        out: dict[str, Any] = {}

        def write() -> None:
            try:
                out["fid"] = c.add_flow("retried")
            except Exception as exc:  # reported below
                out["error"] = exc
        with paused(daemon):
            t = threading.Thread(target=write)
            t.start()
            # frozen until the first attempt timed out and its socket was dropped
            assert resent.wait(15), "the client never gave up on its first attempt"
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

