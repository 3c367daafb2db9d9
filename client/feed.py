"""Following the change feed without gaps: the ordering logic both clients share.

A watcher subscribes first, then reads history after its starting revision,
then takes live events. :class:`Sequencer` decides what to do with each
event: deliver it, drop it (already seen), or report a gap (fetch history to
fill it; if the history is compacted, the caller must resync).
"""

from __future__ import annotations

from typing import Any

import zmq

from . import protocol
from .curve import CurveKeys, apply_to_subscriber
from .model import Change, changes_of

TOPIC = b"rev"
#: live events a slow subscriber may queue before ZeroMQ drops the newest
SUB_HWM = 100_000


class Sequencer:
    """Revision bookkeeping for one watcher: no gap, no duplicate."""

    def __init__(self, last: int) -> None:
        self.last = last

    def accept(self, event: dict[str, Any]) -> list[Change] | None:
        """Changes to deliver ([] if already seen), or None if there is a gap before it."""
        rev = event["revision"]
        if rev <= self.last:
            return []
        if rev != self.last + 1:
            return None
        self.last = rev
        return changes_of(event)

    def accept_history(self, changes: list[Change]) -> list[Change]:
        out = [c for c in changes if c.revision > self.last]
        if out:
            self.last = out[-1].revision
        return out


def configure_subscriber(sock: Any, endpoint: str, keys: CurveKeys | None = None) -> Any:
    """Options and subscription for a SUB socket (sync or asyncio), then connect."""
    apply_to_subscriber(sock, endpoint, keys)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, SUB_HWM)
    sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_REPLY_BYTES)
    sock.setsockopt(zmq.SUBSCRIBE, TOPIC)
    sock.connect(endpoint)
    return sock


def decode_event(frames: list[bytes]) -> dict[str, Any] | None:
    if len(frames) != 2 or frames[0] != TOPIC:
        return None
    event = protocol.unpack(frames[1], protocol.MAX_REPLY_BYTES)
    return event if isinstance(event, dict) and "revision" in event else None
