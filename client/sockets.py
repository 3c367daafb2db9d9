"""The one place the client makes its ZeroMQ sockets, sync or asyncio alike.

Both transports and every follower open their sockets here, so an option
(a limit today, CURVE keys for tcp endpoints later) is set once for all.
"""

from __future__ import annotations

from typing import TypeVar

import zmq

from . import curve, protocol

#: live events a slow subscriber may queue before ZeroMQ drops the newest
SUB_HWM = 100_000

S = TypeVar("S", bound=zmq.Socket)


def _common(sock: S, endpoint: str) -> S:
    """Options every client socket gets, before it connects."""
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_REPLY_BYTES)
    return sock


def open_dealer(ctx: zmq.Context[S], endpoint: str, keys: curve.CurveKeys | None = None
                ) -> tuple[S, curve.HandshakeMonitor | None]:
    """The request socket (a ``zmq.asyncio.Context`` gives an asyncio one), and on tcp
    the monitor of its handshake, started before connect so no refusal is missed."""
    sock = _common(ctx.socket(zmq.DEALER), endpoint)
    monitor = curve.prepare(sock, endpoint, keys)
    sock.connect(endpoint)
    return sock, monitor


def open_subscriber(ctx: zmq.Context[S], endpoint: str,
                    keys: curve.CurveKeys | None = None) -> S:
    """A SUB socket on the change feed, subscribed to the event topic (with the
    request socket's CURVE keys on tcp: the daemon's PUB is CURVE too)."""
    sock = _common(ctx.socket(zmq.SUB), endpoint)
    sock.setsockopt(zmq.RCVHWM, SUB_HWM)
    sock.setsockopt(zmq.SUBSCRIBE, protocol.EVENT_TOPIC)
    curve.apply_to_subscriber(sock, endpoint, keys)
    sock.connect(endpoint)
    return sock
