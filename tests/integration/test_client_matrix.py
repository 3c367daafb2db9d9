"""One behaviour matrix for both clients: the sync FlowClient and the AsyncFlowClient
run the same request core, so each case here must come out the same for both
(issue 13: a 17 MiB add_flow was TooLargeError from one and a timeout from the other;
the async reader dropped id-less error replies)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
from flowd_client import (
    AsyncFlowClient,
    ConflictError,
    FlowClient,
    NotFoundError,
    ProtocolError,
    TooLargeError,
    UnavailableError,
)
from flowd_client.protocol import pack, unpack

KINDS = ["sync", "async"]
#: 17 MiB of plans: over the daemon's default request limit of 16 MiB
OVERSIZE = [{"s": "x" * 1_000_000}] * 17


def run(kind: str, where: dict[str, Any], *calls: tuple[str, tuple[Any, ...], dict[str, Any]],
        **client_kw: Any) -> list[Any]:
    """Make each call on one client of ``kind``, in order; a raised error is the result
    of its call (the rest still run)."""
    if kind == "sync":
        out: list[Any] = []
        with FlowClient(**where, **client_kw) as c:
            for name, args, kw in calls:
                try:
                    out.append(getattr(c, name)(*args, **kw))
                except Exception as exc:  # compared below
                    out.append(exc)
        return out

    async def main() -> list[Any]:
        res: list[Any] = []
        async with AsyncFlowClient(**where, **client_kw) as c:
            for name, args, kw in calls:
                try:
                    res.append(await getattr(c, name)(*args, **kw))
                except Exception as exc:  # compared below
                    res.append(exc)
        return res
    return asyncio.run(main())


def call(method: str, *args: Any, **kw: Any) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    return method, args, kw


def at(daemon) -> dict[str, Any]:
    return {"data_dir": daemon.data_dir}


@pytest.mark.parametrize("kind", KINDS)
def test_oversize_is_too_large_at_once(daemon, kind: str) -> None:
    t0 = time.monotonic()
    big, stats = run(kind, at(daemon), call("add_flow", "big", OVERSIZE), call("stats"),
                     timeout=20.0)
    assert isinstance(big, TooLargeError), big
    assert time.monotonic() - t0 < 10  # refused before sending, not after the 20 s budget
    assert stats["requests"].get("add_flow") is None and stats["flows"] == 0


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_flow(daemon, kind: str) -> None:
    got, update, delete = run(kind, at(daemon), call("get_flow_by_id", "nope"),
                              call("update_flow", "nope", name="x"),
                              call("delete_flow", "nope"))
    assert got is None and delete is False
    assert isinstance(update, NotFoundError) and "nope" in update.message


@pytest.mark.parametrize("kind", KINDS)
def test_conflict(daemon, kind: str) -> None:
    with daemon.client() as c:
        fid = c.add_flow("a")
        rev = c.get_flow_by_id(fid).revision
    stale, fresh = run(kind, at(daemon), call("update_flow", fid, name="b", if_revision=rev + 5),
                       call("update_flow", fid, name="c", if_revision=rev))
    assert isinstance(stale, ConflictError)
    assert stale.data["current_revision"] == rev and stale.data["expected_revision"] == rev + 5
    assert fresh.name == "c"


@pytest.mark.parametrize("kind", KINDS)
def test_daemon_not_running(daemon, kind: str) -> None:
    daemon.stop()
    t0 = time.monotonic()
    [err] = run(kind, at(daemon), call("ping"), timeout=3.0)
    assert isinstance(err, UnavailableError) and "no flowd is running" in err.message
    assert time.monotonic() - t0 < 3.0 + 2.0


@pytest.mark.parametrize("kind", KINDS)
def test_daemon_not_answering_is_unavailable_within_the_timeout(daemon, kind: str) -> None:
    os.kill(daemon.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        [err] = run(kind, at(daemon), call("ping"), timeout=1.5, retries=2)
        took = time.monotonic() - t0
    finally:
        os.kill(daemon.proc.pid, signal.SIGCONT)
    assert isinstance(err, UnavailableError) and "did not answer" in err.message, err
    assert 1.4 <= took < 1.5 + 2.0


@pytest.mark.parametrize("kind", KINDS)
def test_a_write_is_retried_across_a_daemon_restart(daemon, kind: str) -> None:
    """A connected client; the daemon is SIGKILLed and a new one started while a write's
    attempts go on (18 s of budget, three attempts): the write lands, once."""
    out = run_across_restart(kind, daemon)
    assert isinstance(out, str), out
    with daemon.client() as c:
        assert [f.id for f in c.find_by_name("across")] == [out]


def run_across_restart(kind: str, daemon) -> Any:
    """One client: ping (connected), kill + restart in a thread, then add_flow."""
    def restart() -> None:
        daemon.kill()
        daemon.start()

    if kind == "sync":
        with FlowClient(daemon.data_dir, timeout=18.0, retries=2) as c:
            c.ping()
            t = threading.Thread(target=restart)
            t.start()
            wait_dead(daemon)
            try:
                return c.add_flow("across")
            except Exception as exc:  # compared by the caller
                return exc
            finally:
                t.join(30)

    async def main() -> Any:
        async with AsyncFlowClient(daemon.data_dir, timeout=18.0, retries=2) as c:
            await c.ping()
            t = threading.Thread(target=restart)
            t.start()
            await asyncio.to_thread(wait_dead, daemon)
            try:
                return await c.add_flow("across")
            except Exception as exc:  # compared by the caller
                return exc
            finally:
                await asyncio.to_thread(t.join, 30)
    return asyncio.run(main())


def wait_dead(daemon) -> None:
    """Until the first daemon is gone (the restart thread kills it first)."""
    first = daemon.proc
    deadline = time.monotonic() + 10
    while first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)


# ------------------------------------------------------------------ id-less errors


class FakeDaemon:
    """A ROUTER that answers every request with a stray padding, a late reply to some
    other id, then an error without an id (what flowd sends for a frame it could not
    read far enough to find the id)."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            if not self.sock.poll(50):
                continue
            envelope, frame = self.sock.recv_multipart()
            rid = unpack(frame)["id"]
            for reply in ({}, {"id": rid + 1000, "result": "late"},
                          {"error": {"code": "PROTOCOL", "message": "undecodable message"}}):
                self.sock.send_multipart([envelope, pack(reply)])

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close(0)
        self.ctx.term()


@pytest.mark.parametrize("kind", KINDS)
def test_an_id_less_error_answers_the_request(tmp_path: Path, kind: str) -> None:
    endpoint = f"ipc://{tmp_path}/fake.sock"
    fake = FakeDaemon(endpoint)
    try:
        t0 = time.monotonic()
        [err] = run(kind, {"endpoint": endpoint}, call("get_flow_by_id", "a"), timeout=10.0)
    finally:
        fake.close()
    assert isinstance(err, ProtocolError) and "undecodable" in err.message, err
    assert time.monotonic() - t0 < 5  # matched at once, not timed out
