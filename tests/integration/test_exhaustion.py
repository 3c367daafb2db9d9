"""Issue 10, probes 6-8: file descriptors and memory that others can make flowd spend.

Memory is checked as the daemon's RSS (psutil) against the README's bounds:
before, a client that never read grew the daemon from 116 MiB to 2,073 MiB,
and 800 updates of a 1 MiB flow held 800 MiB in the history and retry windows.
The asserted margins are generous (allocator slack, the kernel's socket
buffers are not counted) yet far below what the unbounded queues took.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import psutil
import pytest
import zmq
from awaiting import wait_for
from flowd_client import FlowClient
from flowd_client.discovery import read_lock_info
from flowd_client.protocol import build_request

MiB = 1 << 20
#: README, Limits: the defaults
PEER_QUEUE, SUBSCRIBER_QUEUE, HISTORY, RETRY_KEYS = 64 * MiB, 64 * MiB, 64 * MiB, 32 * MiB
#: what the daemon may use besides the bounded queues and windows (allocator slack,
#: transient copies of a request being handled): generous, far below the old growth
SLACK = 96 * MiB




def nofile(soft: int, hard: int | None = None):
    def set_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]
                            if hard is None else hard))
    return set_limit


@pytest.fixture
def many_fds():
    """This test process opens thousands of sockets itself."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 5000:
        pytest.skip(f"the hard open-file limit here is {hard}; these tests open ~4000 "
                    "sockets (raise it, e.g. ulimit -Hn 65536, to run them)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def idle_dealers(endpoint: str, n: int) -> tuple[zmq.Context, list[zmq.Socket]]:
    ctx = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, n + 64)
    socks = []
    for _ in range(n):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(endpoint)
        socks.append(s)
    return ctx, socks


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def test_1100_idle_connections_under_a_soft_limit_of_1024(make_daemon, data_dir: Path,
                                                         many_fds: int) -> None:
    d = make_daemon(data_dir).start(preexec_fn=nofile(1024))
    proc = psutil.Process(d.proc.pid)
    assert proc.rlimit(psutil.RLIMIT_NOFILE) == (many_fds, many_fds)  # raised to the hard limit
    ctx, socks = idle_dealers(read_lock_info(data_dir)["endpoint"], 1100)
    try:
        wait_for(lambda: proc.num_fds() >= 1100, timeout=60.0, what="1,100 accepted connections")
        with d.client(timeout=5) as c:
            assert c.add_flow("served") and c.ping()["pong"]
        assert d.proc.poll() is None  # before: libzmq aborted (EMFILE, rc -6)
    finally:
        ctx.destroy(linger=0)
    assert d.stop() == 0


def test_near_the_fd_limit_it_stops_accepting_and_keeps_serving(make_daemon, data_dir: Path,
                                                                many_fds: int) -> None:
    d = make_daemon(data_dir).start(preexec_fn=nofile(400, 400))
    early = d.client(timeout=5)
    early.ping()  # connected before the flood
    ctx, socks = idle_dealers(read_lock_info(data_dir)["endpoint"], 600)
    try:
        wait_for(lambda: "not accepting new connections" in d.read_log(), timeout=60.0,
                 what="the pause")
        time.sleep(0.5)  # let queued connection attempts land: none may kill the daemon
        assert d.proc.poll() is None
        assert early.add_flow("still served")
        fds = early.stats()["limits"]["fds"]
        assert fds["accepting"] is False and fds["limit"] == 400 and fds["peak"] < 400
        print(f"fd limit 400: paused at {fds['pause_at']}, peak {fds['peak']}")
    finally:
        ctx.destroy(linger=0)
    wait_for(lambda: "accepting connections again" in d.read_log(), timeout=60.0, what="the resume")
    with FlowClient(data_dir, timeout=5) as late:  # a new connection is accepted again
        assert late.ping()["pong"]
    early.close()
    assert d.stop() == 0


def test_a_client_that_never_reads_costs_at_most_its_queue_bound(daemon, data_dir: Path
                                                                 ) -> None:
    with daemon.client() as c:
        for i in range(100):
            c.add_flow(f"f{i}", [{"text": "p" * 10_000}])  # the store: about 1 MiB
        before = rss(daemon.proc.pid)
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.RCVHWM, 1)  # it takes (almost) nothing off the socket
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(read_lock_info(data_dir)["endpoint"])
        for rid in range(2000):
            sock.send(build_request(rid, "get_all_flows", {}))
        wait_for(lambda: c.stats()["requests"].get("get_all_flows", 0) >= 2000, 120,
                 "the daemon to answer 2,000 listings")
        grew = rss(daemon.proc.pid) - before
        print(f"never-reading peer: RSS grew {grew / MiB:.1f} MiB")
        assert grew < PEER_QUEUE + SLACK, f"RSS grew {grew / MiB:.0f} MiB"
        limits = c.stats()["limits"]
        assert limits["replies_dropped"] > 0  # the rest it retries, if it ever reads
        ctx.destroy(linger=0)


def _updates(c: FlowClient, fid: str, n: int) -> None:
    for i in range(n):
        c.update_flow(fid, plans=[{"i": i, "blob": f"{i:08d}" * (MiB // 8)}])


def test_big_updates_and_watchers_that_never_read_are_bounded(daemon, data_dir: Path) -> None:
    with daemon.client(timeout=30) as c:
        fid = c.add_flow("big")
        _updates(c, fid, 20)  # warm up: the allocator's first arenas are not growth
        before = rss(daemon.proc.pid)
        ctx = zmq.Context()
        subs = []
        for _ in range(3):
            sub = ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.RCVHWM, 1)
            sub.setsockopt(zmq.SUBSCRIBE, b"rev")
            sub.connect(c.events_endpoint())
            subs.append(sub)
        time.sleep(0.5)  # subscriptions reach the daemon (no event to await: they never read)
        _updates(c, fid, 800)
        grew = rss(daemon.proc.pid) - before
        print(f"800 updates of 1 MiB, 3 watchers that never read: RSS grew {grew / MiB:.1f} MiB")
        bound = HISTORY + RETRY_KEYS + 3 * SUBSCRIBER_QUEUE
        assert grew < bound + SLACK, f"RSS grew {grew / MiB:.0f} MiB"
        limits = c.stats()["limits"]
        assert limits["history"]["bytes"] <= HISTORY
        assert limits["retry_keys"]["bytes"] <= RETRY_KEYS
        ctx.destroy(linger=0)
        _updates(c, fid, 50)
        assert rss(daemon.proc.pid) - before < bound + SLACK
        assert c.get_flow_by_id(fid).plans[0]["i"] == 49


def test_big_replies_and_events_reach_every_kind_of_client(daemon, data_dir: Path) -> None:
    """A message over one queue slot goes out behind padding messages: the sync, async
    and cached clients and watchers must take the message, not a padding."""
    import asyncio

    from flowd_client import AsyncFlowClient

    plans = [{"blob": "b" * (MiB - 64)}, {"blob": "c" * (MiB - 64)}, {"blob": "d" * (MiB // 2)}]
    with daemon.client(timeout=20) as c, daemon.client(timeout=20, cache=True) as cached:
        watch = c.watch(timeout=10)
        fid = c.add_flow("big", plans)
        assert c.get_flow_by_id(fid).plans == plans
        change = next(watch)
        assert change.flow_id == fid and change.flow.plans == plans
        deadline = time.monotonic() + 20
        while cached.get_flow_by_id(fid) is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert cached.get_flow_by_id(fid).plans == plans

    async def read() -> list:
        async with AsyncFlowClient(data_dir, timeout=20) as a:
            return (await a.get_flow_by_id(fid)).plans

    assert asyncio.run(read()) == plans
