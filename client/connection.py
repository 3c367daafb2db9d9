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

import psutil
import zmq

from . import curve, protocol
from .discovery import (
    check_daemon_owner,
    default_data_dir,
    is_locked,
    open_no_follow,
    read_lock_info,
    starting_daemon,
)
from .errors import (
    FlowdError,
    InvalidArgumentError,
    ProtocolError,
    TooLargeError,
    UnavailableError,
    error_from_wire,
)
from .hints import start_hint


def down_error(what: str, data_dir: Path | None) -> UnavailableError:
    """UnavailableError for a daemon that is not running: ``what`` plus how to start one.

    ``data`` keeps ``what`` and the dir, so flowctl can name its own way instead
    (``--autostart``, not ``autostart=True``).
    """
    return UnavailableError(f"{what}; {start_hint(data_dir, cli=False)}",
                            {"hint": "start", "what": what,
                             "data_dir": None if data_dir is None else str(data_dir)})


def limit_of(hello: Any) -> int:
    """The request limit a hello reply reports (the protocol default if it says none)."""
    value = hello.get("max_request_bytes") if isinstance(hello, dict) else None
    return value if type(value) is int and value > 0 else protocol.MAX_REQUEST_BYTES


def check_size(op: str, size: int, limit: int) -> None:
    """Refuse locally what the daemon would refuse: no round trip, a clear error."""
    if size > limit:
        raise TooLargeError(f"{op}: request of {size} bytes exceeds the daemon's limit of "
                            f"{limit} bytes (--max-request-bytes)", {"limit": limit, "size": size})


def _alive(pid: Any) -> bool:
    """The lock file's pid is a live process (a crashed predecessor's stale content is not)."""
    return type(pid) is int and pid > 0 and psutil.pid_exists(pid)


class Endpoints:
    """Where the daemon listens: given explicitly, or read from the data dir's lock."""

    def __init__(self, endpoint: str | None, data_dir: str | os.PathLike[str] | None,
                 autostart: bool = False) -> None:
        self.explicit = endpoint
        self.data_dir = None if endpoint and data_dir is None else Path(
            data_dir if data_dir is not None else default_data_dir()).expanduser()
        self.autostart = autostart and endpoint is None
        self.events: str | None = None
        #: CURVE keys for tcp endpoints (flowd_client.curve), set by the client
        self.curve: curve.CurveKeys | None = None

    def resolve(self, deadline: float) -> str:
        """The request endpoint. A daemon that holds the lock but has not advertised
        its endpoint yet (it is loading), or was started and has not taken the lock yet,
        is waited for until ``deadline``."""
        if self.explicit:
            return self.explicit
        d = self.data_dir
        assert d is not None
        spawned = False
        while True:
            if is_locked(d):
                info = read_lock_info(d) or {}
                if isinstance(info.get("endpoint"), str) and _alive(info.get("pid")):
                    check_daemon_owner(d, info)
                    self.events = info.get("events")
                    return info["endpoint"]
            elif self.autostart and not spawned:
                spawn_daemon(d)
                spawned = True
            elif not spawned and starting_daemon(d) is None:
                raise self.not_running()
            if time.monotonic() >= deadline:
                raise self.not_ready(spawned)
            time.sleep(0.02)

    def not_running(self) -> FlowdError:
        d = self.data_dir
        if d is not None and d.exists() and not d.is_dir():
            return InvalidArgumentError(f"data dir {d} is not a directory")
        return down_error(f"no flowd is running for data dir {d}", d)

    def not_ready(self, spawned: bool) -> UnavailableError:
        d = self.data_dir
        if spawned:
            return UnavailableError(f"the flowd started for data dir {d} did not come up in "
                                    f"time; see {d / 'flowd.log' if d else 'its log'}")
        return UnavailableError(f"the flowd for data dir {d} is starting but was not ready in "
                                "time (still loading a big store?); retry, or see its log")

    def daemon_down(self) -> bool:
        return self.data_dir is not None and not self.explicit and not is_locked(self.data_dir)

    def no_answer(self, endpoint: str | None, timeout: float) -> UnavailableError:
        """No reply within the deadline: say why only as far as the lock can tell."""
        if self.explicit:
            return UnavailableError(f"nothing answered at {endpoint} within {timeout:g} s: "
                                    "is a flowd listening there?")
        if self.daemon_down():
            return down_error(f"flowd for data dir {self.data_dir} stopped before it answered",
                              self.data_dir)
        return UnavailableError(f"flowd at {endpoint} holds data dir {self.data_dir} but did "
                                f"not answer within {timeout:g} s (busy, stopped or stuck); "
                                "see its log")


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
        self._handshake: curve.HandshakeMonitor | None = None
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        #: the daemon's request limit, from hello on the current socket
        self._limit: int | None = None

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
            self._handshake = curve.prepare(sock, endpoint, self.endpoints.curve)
            sock.connect(endpoint)
            self._sock, self._endpoint = sock, endpoint
        return self._sock

    def _drop_socket(self) -> None:
        if self._handshake is not None:
            self._handshake.close()
            self._handshake = None
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None
        self._limit = None  # the next socket may reach a restarted daemon

    def request(self, op: str, args: dict[str, Any], write: bool,
                timeout: float | None = None) -> tuple[Any, int | None]:
        """Send one request and wait for its reply; returns (result, revision)."""
        self._check_fork()
        timeout = timeout if timeout is not None else self.timeout
        deadline = time.monotonic() + timeout
        with self._lock:
            key = (self.client_id, next(self._seq)) if write else None
            rid = next(self._ids)
            frame = protocol.build_request(rid, op, args, key)
            if len(frame) > protocol.MIN_REQUEST_LIMIT:
                check_size(op, len(frame), self._daemon_limit(deadline, timeout))
            return self._attempts(rid, frame, deadline, timeout)

    def _daemon_limit(self, deadline: float, timeout: float) -> int:
        """The limit the daemon reported in hello, asked once per socket: a request
        over it is refused here instead of being sent."""
        if self._limit is None:
            rid = next(self._ids)
            result, _ = self._attempts(rid, protocol.hello_request(rid), deadline, timeout)
            self._limit = limit_of(result)
        return self._limit

    def _attempts(self, rid: int, frame: bytes, deadline: float,
                  timeout: float) -> tuple[Any, int | None]:
        attempts = self.retries + 1
        for attempt in range(attempts):
            sock = self._socket(deadline)
            sock.send(frame)
            wait_until = time.monotonic() + (deadline - time.monotonic()) / (attempts - attempt)
            msg = self._receive(sock, rid, wait_until, self._handshake)
            if msg is not None:
                if "error" in msg:
                    raise error_from_wire(msg["error"])
                return msg.get("result"), msg.get("rev")
            self._drop_socket()
            if self.endpoints.daemon_down() or time.monotonic() >= deadline:
                break
        raise self.endpoints.no_answer(getattr(self, "_endpoint", self.endpoints.explicit),
                                       timeout)

    @staticmethod
    def _receive(sock: zmq.Socket, rid: int, until: float,
                 handshake: curve.HandshakeMonitor | None = None) -> dict[str, Any] | None:
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return None
            if not curve.wait_reply(sock, handshake, left):
                continue  # a handshake event, or the time is up
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                continue
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
