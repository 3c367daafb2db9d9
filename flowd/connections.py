"""How many connections the daemon holds, and when it stops accepting more.

Part of the server layer (flowd.loop owns the loop and the sockets). Monitor
sockets report every accepted and closed connection of the loop's sockets, so
the daemon counts its open files after each change and pauses its listeners
(flowd.listen) before the open-file limit, where libzmq would abort; it
resumes with hysteresis (flowd.limits.FdGuard). A tcp listener cannot be
hidden: near the limit the daemon can only warn.
"""

from __future__ import annotations

import logging
from typing import cast

import zmq

from .limits import FdGuard, open_fds, raise_nofile
from .listen import Listeners
from .logsetup import RateLimitedLogger

log = logging.getLogger("flowd.loop")
fd_log = RateLimitedLogger(log, interval=10.0, burst=1)

_MONITORED = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED


class Connections:
    """The monitors of ``sockets`` and the open-file guard over ``listeners``."""

    def __init__(self, ctx: zmq.Context, sockets: tuple[zmq.Socket, ...],
                 listeners: Listeners, endpoint: str) -> None:
        self.sockets = sockets
        self.listeners = listeners
        self.tcp = endpoint.startswith("tcp://")
        self.monitors = [self._monitor(ctx, sock) for sock in sockets]
        #: polled as plain fds: a ZeroMQ socket in the poll set costs two syscalls a
        #: turn (~20 µs). Such an fd is edge-triggered: it turns readable only when an
        #: event lands in a queue the reader has found empty, so each monitor is read
        #: until empty now (a fresh pipe never signals its first message) and at every
        #: :meth:`drain`
        self.fds = [cast(int, mon.getsockopt(zmq.FD)) for mon in self.monitors]
        self.guard = FdGuard(raise_nofile()[0])
        self._empty()

    @staticmethod
    def _monitor(ctx: zmq.Context, sock: zmq.Socket) -> zmq.Socket:
        """A PAIR socket that receives ``sock``'s connection events (never blocks libzmq:
        an unlimited receive queue; events are tiny and drained every turn)."""
        addr = f"inproc://flowd-monitor-{id(sock)}"
        sock.monitor(addr, _MONITORED)
        mon = ctx.socket(zmq.PAIR)
        mon.setsockopt(zmq.RCVHWM, 0)
        mon.setsockopt(zmq.LINGER, 0)
        mon.connect(addr)
        return mon

    def drain(self) -> None:
        """Take every waiting event, then count the open files."""
        self._empty()
        self.count()

    def _empty(self) -> None:
        for mon in self.monitors:
            try:
                while True:
                    mon.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                pass

    def count(self) -> None:
        guard = self.guard
        action = guard.update(open_fds())
        if action is None:
            return
        if self.tcp:
            if action == "pause":
                fd_log.warning("fds", "%d of %d file descriptors open: new tcp connections "
                               "may fail until some close", guard.open, guard.limit)
            return
        try:
            (self.listeners.pause if action == "pause" else self.listeners.resume)()
        except OSError as exc:
            log.error("could not %s accepting connections: %s", action, exc)
            return
        if action == "pause":
            fd_log.warning("fds", "%d of %d file descriptors open: not accepting new "
                           "connections until some close (the accepted ones are served)",
                           guard.open, guard.limit)
        else:
            log.info("%d file descriptors open (limit %d): accepting connections again",
                     guard.open, guard.limit)

    def close(self) -> None:
        for sock in self.sockets:
            sock.disable_monitor()
        for mon in self.monitors:
            mon.close(0)
