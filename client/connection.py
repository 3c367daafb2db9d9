"""The sync transport: one DEALER socket, Lazy Pirate retries, fork safety.

A thin loop around :class:`~flowd_client.request_core.RequestCore`, which
decides what is sent and what a reply means. After an attempt times out the
socket is closed and reopened and the same frame (same id, same idempotency
key) is sent again, within the caller's one deadline; then UnavailableError.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from . import curve
from .endpoints import Endpoints
from .errors import FlowdError
from .request_core import Request, RequestCore, Steps
from .sockets import open_dealer


def drive(conn: Connection, steps: Steps,
          on_write: Callable[[int], None] | None = None) -> Any:
    """Run a generator of calls over ``conn``; ``on_write(revision)`` after each write
    the daemon acknowledged (the cached client waits there until its mirror has it)."""
    try:
        call = next(steps)
        while True:
            try:
                result, rev = conn.request(call.op, call.args, call.write)
            except FlowdError as exc:  # the steps may answer a refusal (an older daemon's)
                call = steps.throw(exc)
                continue
            if on_write is not None and call.write and rev is not None:
                on_write(rev)
            call = steps.send(result)
    except StopIteration as done:
        return done.value


class Connection:
    """Thread-safe (one lock around the socket); a forked child opens its own socket."""

    def __init__(self, endpoints: Endpoints, timeout: float = 5.0, retries: int = 2) -> None:
        self.endpoints = endpoints
        self.core = RequestCore(timeout, retries)
        self._reset_process_state()

    def _reset_process_state(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._sock: zmq.Socket[bytes] | None = None
        self._handshake: curve.HandshakeMonitor | None = None
        self._endpoint: str | None = None

    def _check_fork(self) -> None:
        if os.getpid() != self._pid:
            # the parent's sockets belong to the parent; never touch or close them here
            self.core.reset()
            self._reset_process_state()

    @property
    def context(self) -> zmq.Context[zmq.Socket[bytes]]:
        self._check_fork()
        if self._ctx is None:
            self._ctx = zmq.Context()
        return self._ctx

    def _socket(self, deadline: float) -> zmq.Socket[bytes]:
        if self._sock is None:
            endpoint = self.endpoints.resolve(deadline)
            self._sock, self._handshake = open_dealer(self.context, endpoint,
                                                      self.endpoints.curve)
            self._endpoint = endpoint
        return self._sock

    def _drop_socket(self) -> None:
        if self._handshake is not None:
            self._handshake.close()
            self._handshake = None
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None
        self.core.forget_limit()  # the next socket may reach a restarted daemon

    def request(self, op: str, args: dict[str, Any], write: bool,
                timeout: float | None = None) -> tuple[Any, int | None]:
        """Send one request and wait for its reply; returns (result, revision)."""
        self._check_fork()
        with self._lock:
            req = self.core.request(op, args, write, timeout)
            if self.core.needs_limit(req):
                self.core.learn_limit(self._exchange(self.core.hello(req))[0])
            self.core.check_size(req)
            return self._exchange(req)

    def _exchange(self, req: Request) -> tuple[Any, int | None]:
        for attempt in self.core.attempts():
            sock = self._socket(req.deadline)
            sock.send(req.frame)
            msg = self._receive(sock, req.rid, self.core.wait_until(req, attempt))
            if msg is not None:
                return self.core.outcome(msg)
            self._drop_socket()
            if self.endpoints.daemon_down() or self.core.expired(req):
                break
        raise self.endpoints.no_answer(self._endpoint or self.endpoints.explicit, req.timeout)

    def _receive(self, sock: zmq.Socket[bytes], rid: int,
                 until: float) -> dict[str, Any] | None:
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return None
            frame = self._recv(sock, left)
            if frame is None:
                continue  # a handshake event, or the time is up
            msg = self.core.decode(frame)
            if self.core.match(msg, (rid,)) is not None:
                return msg
            # a late reply to an earlier, abandoned attempt (or a padding): drop it

    def _recv(self, sock: zmq.Socket[bytes], seconds: float) -> bytes | None:
        """One frame within ``seconds``. On tcp the handshake monitor is watched too, so
        a refused key is NotAllowedError at once; ipc keeps the cheaper blocking recv."""
        try:
            if self._handshake is None:
                sock.setsockopt(zmq.RCVTIMEO, max(1, int(seconds * 1000)))
                return sock.recv()
            if curve.wait_reply(sock, self._handshake, seconds):
                return sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            pass
        return None

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
