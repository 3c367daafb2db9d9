"""The sync transport: one DEALER socket, deadlines, Lazy Pirate retries, fork safety.

Every request carries a fresh id and replies are matched by it, so a late
reply to an abandoned attempt is dropped. After a timeout the socket is
closed and reopened and the same request (same idempotency key) is sent
again, within the caller's one deadline; then UnavailableError.
"""

from __future__ import annotations

import itertools
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import zmq

from . import protocol
from .discovery import (
    check_daemon_owner,
    default_data_dir,
    is_locked,
    open_no_follow,
    read_lock_info,
)
from .errors import ProtocolError, TooLargeError, UnavailableError, error_from_wire


def start_hint(data_dir: Path | None) -> str:
    where = f" --data-dir {data_dir}" if data_dir else ""
    return (f"start it with `flowd{where}` (or `make run`, or `systemctl --user start flowd`), "
            "or pass autostart=True")


class Endpoints:
    """Where the daemon listens: given explicitly, or read from the data dir's lock."""

    def __init__(self, endpoint: str | None, data_dir: str | os.PathLike[str] | None,
                 autostart: bool = False) -> None:
        self.explicit = endpoint
        self.data_dir = None if endpoint and data_dir is None else Path(
            data_dir if data_dir is not None else default_data_dir()).expanduser()
        self.autostart = autostart and endpoint is None
        self.events: str | None = None

    def resolve(self, deadline: float) -> str:
        if self.explicit:
            return self.explicit
        assert self.data_dir is not None
        started = False
        while True:
            info = read_lock_info(self.data_dir)
            if info and isinstance(info.get("endpoint"), str) and is_locked(self.data_dir):
                check_daemon_owner(self.data_dir, info)
                self.events = info.get("events")
                return info["endpoint"]
            if not is_locked(self.data_dir):
                if not self.autostart:
                    raise UnavailableError(
                        f"no flowd is running for data dir {self.data_dir}: "
                        + start_hint(self.data_dir))
                if not started:
                    spawn_daemon(self.data_dir)
                    started = True
            if time.monotonic() >= deadline:
                raise UnavailableError(f"flowd for {self.data_dir} did not come up in time; "
                                       f"see {self.data_dir / 'flowd.log'}")
            time.sleep(0.02)

    def daemon_down(self) -> bool:
        return self.data_dir is not None and not self.explicit and not is_locked(self.data_dir)


def spawn_daemon(data_dir: Path) -> None:
    """Start a detached ``flowd`` for ``data_dir``; if several tools race, the lock picks one."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(data_dir / "flowd.log", "ab", opener=open_no_follow) as log:
        subprocess.Popen(
            [sys.executable, "-m", "flowd", "--data-dir", str(data_dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            close_fds=True)


class Connection:
    """Thread-safe (one lock around the socket); a forked child opens its own socket."""

    def __init__(self, endpoints: Endpoints, timeout: float = 5.0, retries: int = 2) -> None:
        self.endpoints = endpoints
        self.timeout = timeout
        self.retries = retries
        self.client_id = secrets.token_hex(8)
        self._reset_process_state()

    def _reset_process_state(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._ctx: zmq.Context | None = None
        self._sock: zmq.Socket | None = None
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)

    def _check_fork(self) -> None:
        if os.getpid() != self._pid:
            # the parent's sockets belong to the parent; never touch or close them here
            self.client_id = secrets.token_hex(8)
            self._reset_process_state()

    @property
    def context(self) -> zmq.Context:
        self._check_fork()
        if self._ctx is None:
            self._ctx = zmq.Context()
        return self._ctx

    def _socket(self, deadline: float) -> zmq.Socket:
        if self._sock is None:
            endpoint = self.endpoints.resolve(deadline)
            sock = self.context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_REPLY_BYTES)
            sock.connect(endpoint)
            self._sock, self._endpoint = sock, endpoint
        return self._sock

    def _drop_socket(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None

    def request(self, op: str, args: dict[str, Any], write: bool,
                timeout: float | None = None) -> tuple[Any, int | None]:
        """Send one request and wait for its reply; returns (result, revision)."""
        self._check_fork()
        with self._lock:
            key = (self.client_id, next(self._seq)) if write else None
            rid = next(self._ids)
            frame = protocol.build_request(rid, op, args, key)
            if len(frame) > protocol.MAX_REQUEST_BYTES:
                # the daemon would drop the connection without a reply: say so now
                raise TooLargeError(f"{op}: request of {len(frame)} bytes exceeds "
                                    f"{protocol.MAX_REQUEST_BYTES}")
            return self._attempts(rid, frame, timeout if timeout is not None else self.timeout)

    def _attempts(self, rid: int, frame: bytes, timeout: float) -> tuple[Any, int | None]:
        deadline = time.monotonic() + timeout
        attempts = self.retries + 1
        for attempt in range(attempts):
            sock = self._socket(deadline)
            sock.send(frame)
            wait_until = time.monotonic() + (deadline - time.monotonic()) / (attempts - attempt)
            msg = self._receive(sock, rid, wait_until)
            if msg is not None:
                if "error" in msg:
                    raise error_from_wire(msg["error"])
                return msg.get("result"), msg.get("rev")
            self._drop_socket()
            if self.endpoints.daemon_down() or time.monotonic() >= deadline:
                break
        where = getattr(self, "_endpoint", self.endpoints.explicit)
        raise UnavailableError(
            f"flowd at {where} did not answer within {timeout:g} s; is it running? "
            + start_hint(self.endpoints.data_dir))

    @staticmethod
    def _receive(sock: zmq.Socket, rid: int, until: float) -> dict[str, Any] | None:
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return None
            sock.setsockopt(zmq.RCVTIMEO, max(1, int(left * 1000)))
            try:
                frame = sock.recv()
            except zmq.Again:
                return None
            msg = protocol.unpack(frame, protocol.MAX_REPLY_BYTES)
            if not isinstance(msg, dict):
                raise ProtocolError("reply is not a map")
            if msg.get("id") == rid or (msg.get("id") is None and "error" in msg):
                return msg  # an id-less error answers a request the daemon could not decode
            # a late reply to an earlier, abandoned attempt: drop it

    def close(self) -> None:
        if os.getpid() != self._pid:
            return
        with self._lock:
            self._drop_socket()
            ctx, self._ctx = self._ctx, None
        if ctx is not None:
            # outside the lock: term() waits for other threads' sockets (a watch's SUB),
            # and such a thread may need the lock for one last request before it sees ETERM
            ctx.term()
