"""The one place the client makes its ZeroMQ sockets, sync or asyncio alike.

Both transports and every follower open their sockets here, so an option
(a limit today, CURVE keys for tcp endpoints later) is set once for all.
"""

from __future__ import annotations

from typing import TypeVar

import zmq

from . import protocol

#: live events a slow subscriber may queue before ZeroMQ drops the newest
SUB_HWM = 100_000

S = TypeVar("S", bound=zmq.Socket)


def _common(sock: S, endpoint: str) -> S:
    """Options every client socket gets, then connect (security options belong here)."""
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_REPLY_BYTES)
    sock.connect(endpoint)
    return sock


def open_dealer(ctx: zmq.Context[S], endpoint: str) -> S:
    """The request socket (a ``zmq.asyncio.Context`` gives an asyncio one)."""
    return _common(ctx.socket(zmq.DEALER), endpoint)


def open_subscriber(ctx: zmq.Context[S], endpoint: str) -> S:
    """A SUB socket on the change feed, subscribed to the event topic."""
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, SUB_HWM)
    sock.setsockopt(zmq.SUBSCRIBE, protocol.EVENT_TOPIC)
    return _common(sock, endpoint)
