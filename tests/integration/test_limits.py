"""The request limit comes from the daemon: hello reports --max-request-bytes, both
clients refuse bigger requests before sending, and the daemon answers TOO_LARGE (never
a silent drop) for anything ZeroMQ lets through."""

from __future__ import annotations

import asyncio
import time

import pytest
import zmq
from flowd_client import AsyncFlowClient, TooLargeError
from flowd_client.protocol import build_request, socket_limit
from raw_socket import Raw

LIMIT = 64 * 1024


@pytest.fixture
def small(make_daemon):
    return make_daemon(None, "--max-request-bytes", "64K").start()


def big_plans(size: int) -> list[dict[str, str]]:
    return [{"s": "x" * size}]


def test_hello_reports_the_configured_limit(small) -> None:
    with small.client() as c:
        assert c.hello()["max_request_bytes"] == LIMIT


def test_sync_client_refuses_before_sending(small) -> None:
    with small.client(timeout=20) as c:
        c.add_flow("fits", big_plans(LIMIT - 1024))
        t0 = time.monotonic()
        with pytest.raises(TooLargeError) as err:
            c.add_flow("big", big_plans(LIMIT + 10))
        assert time.monotonic() - t0 < c.timeout  # refused, not timed out
        assert str(LIMIT) in err.value.message and "is it running" not in err.value.message
        stats = c.stats()
    assert stats["requests"].get("add_flow") == 1  # the big one never reached the daemon
    assert stats["errors"].get("TOO_LARGE") is None


def test_async_client_refuses_before_sending(small) -> None:
    async def run() -> dict:
        async with AsyncFlowClient(small.data_dir, timeout=20) as c:
            with pytest.raises(TooLargeError):
                await c.add_flow("big", big_plans(LIMIT + 10))
            await c.add_flow("fits", big_plans(LIMIT - 1024))
            return await c.stats()
    stats = asyncio.run(run())
    assert stats["requests"].get("add_flow") == 1 and stats["flows"] == 1


def test_daemon_answers_too_large_and_logs_it(small) -> None:
    raw = Raw(small.data_dir, zmq.DEALER)
    try:
        frame = build_request(7, "add_flow", {"name": "big", "plans": big_plans(LIMIT + 100)})
        assert len(frame) < socket_limit(LIMIT)
        raw.sock.send(frame)
        reply = raw.recv()
        assert reply["id"] == 7 and reply["error"]["code"] == "TOO_LARGE"
        assert reply["error"]["data"] == {"limit": LIMIT, "size": len(frame)}
        raw.reopen()
        raw.sock.send(b"\x00" * (socket_limit(LIMIT) + 1))  # ZeroMQ drops this one
        assert raw.recv(timeout=1.0) is None
    finally:
        raw.close()
    with small.client() as c:
        assert c.ping()["pong"] and c.stats()["errors"]["TOO_LARGE"] == 1
    deadline = time.monotonic() + 15
    while "TOO_LARGE" not in small.read_log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"exceeds the daemon's limit of {LIMIT}" in small.read_log()
