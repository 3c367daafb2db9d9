"""The floor of flowd's stack: a raw pyzmq ROUTER + msgpack echo server.

It does what flowd's loop must do at the very least for a read: receive a
DEALER frame, unpack the request map, pack a reply map carrying one flow
(the size of a get_flow reply), send it back. No validation, no store, no
stats. A flowd round trip cannot be cheaper than this one; the gap between
the two is what flowd's own code costs.

With ``--journal FILE`` it is the floor of a durable write instead: each poll
turn takes every request waiting, appends them to FILE (packed again, as a
journal record is) with one ``write`` and one ``fdatasync`` (a bare group
commit), then answers each with a small map the size of an add_flow reply's
head. Beside Redis ``appendfsync always`` it shows how far the wire flowd must
keep (ZeroMQ, msgpack, one Python thread) allows the issue's request-path
ratios to go on the machine of the run.

    python -m benchmarks.peers.zmq_echo ipc:///path/echo.sock [--journal FILE]
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import psutil
import zmq

from ..datagen import make_flow, sample_flow

#: the reply payload: one typical flow, as get_flow would return it
FLOW = make_flow(random.Random(7), "flow_0badc0de", 7)


def serve(endpoint: str, journal: str | None = None) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(endpoint)
    print("ready", flush=True)
    if journal is None:
        serve_reads(sock)
    else:
        serve_durable(sock, journal)
    sock.close(0)
    ctx.term()


def serve_reads(sock: zmq.Socket[bytes]) -> None:
    while True:
        ident, frame = sock.recv_multipart()
        req = msgpack.unpackb(frame, raw=False)
        if req.get("op") == "stop":
            sock.send_multipart([ident, msgpack.packb({"id": req["id"], "result": True})])
            break
        sock.send_multipart([ident, msgpack.packb({"id": req["id"], "result": FLOW},
                                                  use_bin_type=True)])


def serve_durable(sock: zmq.Socket[bytes], journal: str) -> None:
    """Group commit at its barest: drain, one write + fdatasync, answer the group."""
    fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    stopping = False
    while not stopping:
        sock.poll(-1)
        group: list[tuple[bytes, dict[str, Any]]] = []
        while True:
            try:
                ident, frame = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            group.append((ident, msgpack.unpackb(frame, raw=False)))
        os.write(fd, b"".join(msgpack.packb(req) for _, req in group))
        os.fdatasync(fd)
        for ident, req in group:
            stopping = stopping or req.get("op") == "stop"
            sock.send_multipart([ident, msgpack.packb(
                {"id": req.get("id"), "result": {"id": "flow_0badc0de", "revision": 1}})])
    os.close(fd)


class EchoServer:
    """The echo server in its own process (as flowd is), on an ipc endpoint; with
    ``journal``, the durable-write floor (:func:`serve_durable`) journaling there."""

    def __init__(self, parent: Path, journal: Path | None = None) -> None:
        self.endpoint = f"ipc://{parent / ('echo-durable.sock' if journal else 'echo.sock')}"
        self.journal = journal
        self.proc: subprocess.Popen[str] | None = None

    def cpu_seconds(self) -> float:
        """User+system time of the server process so far."""
        assert self.proc is not None
        times = psutil.Process(self.proc.pid).cpu_times()
        return float(times.user + times.system)

    def __enter__(self) -> EchoServer:
        extra = [] if self.journal is None else ["--journal", str(self.journal)]
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.peers.zmq_echo",
                                      self.endpoint, *extra], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("zmq echo server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        try:
            op, close = client(self.endpoint, "stop")
            op(0)
            close()
            self.proc.wait(10)
        except Exception:  # noqa: BLE001 - fall back to a signal
            self.proc.kill()
            self.proc.wait(10)


def client(endpoint: str,
           op_name: str = "get_flow") -> tuple[Callable[[int], object], Callable[[], None]]:
    """A DEALER that sends one request map and waits for its reply, like FlowClient does."""
    return _dealer(endpoint, lambda i: (op_name, {"flow_id": "flow_0badc0de"}))


def writer(endpoint: str) -> tuple[Callable[[int], object], Callable[[], None]]:
    """A DEALER sending add_flow requests as FlowClient packs them (same flows as the
    flowd and Redis writers), one at a time, waiting for each reply."""
    def add_flow(i: int) -> tuple[str, dict[str, Any]]:
        name, plans = sample_flow(i)
        return "add_flow", {"name": name, "plans": plans}
    return _dealer(endpoint, add_flow)


def _dealer(endpoint: str, request: Callable[[int], tuple[str, dict[str, Any]]]
            ) -> tuple[Callable[[int], object], Callable[[], None]]:
    """(op, close): op(i) sends request(i)'s op and args and waits for the reply."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)

    def op(i: int) -> object:
        name, args = request(i)
        sock.send(msgpack.packb({"v": 1, "id": i & 0x7FFFFFFF, "op": name, "args": args}))
        if not sock.poll(10_000):
            raise TimeoutError("zmq echo: no reply within 10 s")
        return msgpack.unpackb(sock.recv(), raw=False)

    def close() -> None:
        sock.close(0)
        ctx.term()
    return op, close


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[3] if sys.argv[2:3] == ["--journal"] else None)
