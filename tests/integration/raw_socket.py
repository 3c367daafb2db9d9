"""A raw zmq socket to a running daemon, for sending it frames no client would send."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import zmq
from flowd_client.discovery import read_lock_info
from flowd_client.protocol import unpack

REPLY_WAIT = 20.0


class Raw:
    """A raw socket to the daemon, reopened when the daemon drops it."""

    def __init__(self, data_dir: Path, kind: int) -> None:
        self.endpoint = read_lock_info(data_dir)["endpoint"]
        self.ctx = zmq.Context()
        self.kind = kind
        self.sock = self._open()

    def _open(self) -> zmq.Socket:
        sock = self.ctx.socket(self.kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDTIMEO, 10_000)  # a dead daemon must fail the test, not hang it
        sock.connect(self.endpoint)
        return sock

    def reopen(self) -> None:
        self.sock.close(0)
        self.sock = self._open()

    def recv(self, timeout: float = REPLY_WAIT) -> dict[str, Any] | None:
        while True:
            if not self.sock.poll(int(timeout * 1000)):
                return None
            frames = self.sock.recv_multipart()
            reply = unpack(frames[-1], 1 << 30)
            if reply != {}:  # a padding in front of a big reply (flowd.loop)
                break
        assert isinstance(reply, dict) and ("result" in reply or "error" in reply), reply
        return reply

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()

