"""The floor of flowd's stack: a raw pyzmq ROUTER + msgpack echo server.

It does what flowd's loop must do at the very least for a read: receive a
DEALER frame, unpack the request map, pack a reply map carrying one flow
(the size of a get_flow reply), send it back. No validation, no store, no
stats. A flowd round trip cannot be cheaper than this one; the gap between
the two is what flowd's own code costs.

    python -m benchmarks.peers.zmq_echo ipc:///path/echo.sock
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import msgpack
import zmq

from ..datagen import make_flow

#: the reply payload: one typical flow, as get_flow would return it
FLOW = make_flow(random.Random(7), "flow_0badc0de", 7)


def serve(endpoint: str) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(endpoint)
    print("ready", flush=True)
    while True:
        ident, frame = sock.recv_multipart()
        req = msgpack.unpackb(frame, raw=False)
        if req.get("op") == "stop":
            sock.send_multipart([ident, msgpack.packb({"id": req["id"], "result": True})])
            break
        sock.send_multipart([ident, msgpack.packb({"id": req["id"], "result": FLOW},
                                                  use_bin_type=True)])
    sock.close(0)
    ctx.term()


class EchoServer:
    """The echo server in its own process (as flowd is), on an ipc endpoint."""

    def __init__(self, parent: Path) -> None:
        self.endpoint = f"ipc://{parent / 'echo.sock'}"
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> EchoServer:
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.peers.zmq_echo",
                                      self.endpoint], stdout=subprocess.PIPE, text=True)
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
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)

    def op(i: int) -> object:
        sock.send(msgpack.packb({"v": 1, "id": i & 0x7FFFFFFF, "op": op_name,
                                 "args": {"flow_id": "flow_0badc0de"}}))
        if not sock.poll(10_000):
            raise TimeoutError("zmq echo: no reply within 10 s")
        return msgpack.unpackb(sock.recv(), raw=False)

    def close() -> None:
        sock.close(0)
        ctx.term()
    return op, close


if __name__ == "__main__":
    serve(sys.argv[1])
