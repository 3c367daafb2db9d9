"""The change feed's memory: recent revisions for ``watch(since=R)``.

Bounded by count and by bytes: each event is kept packed (msgpack), so what it
costs is its length, exactly, and it pins no version of a flow the store has
moved past. A watcher that asks for history older than the window gets
COMPACTED and resyncs (the window is documented in the README).
"""

from __future__ import annotations

import bisect
from collections import deque
from typing import Any

import msgpack
from flowd_client import protocol
from flowd_client.errors import CompactedError

from .store import Store

MiB = 1 << 20
#: what an entry costs besides its packed bytes (tuples, dict or deque slot, the
#: bytes object's header; an error reply's exception object), counted in the bounds
EVENT_OVERHEAD = 120


def build_event(record: dict[str, Any], store: Store) -> dict[str, Any]:
    """The published form of a record (the protocol's event shape), taken after it
    was applied to ``store``: a set_current carries its flow as it now is, which is
    the record's own last write of that flow if it has one (add_flow: no decoding of
    the line just stored, ~8 µs a write) and the store's otherwise."""
    final = {fid: flow for op, fid, flow in record["changes"] if op != "set_current"}
    changes = [(op, fid, flow if op != "set_current"
                else final[fid] if fid in final else store.flows.get(fid))
               for op, fid, flow in record["changes"]]
    event = protocol.build_event(record["rev"], record["ts"], record["current"], changes,
                                 record.get("merge"))
    if "prev" in record:  # etcd: the feed's previous revision, for gap detection
        event["prev"] = record["prev"]
    return event


def unpack_kept(data: bytes) -> Any:
    """What the daemon itself packed (no limits needed: it is not a peer's frame)."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


class History:
    """The last revisions' events, oldest first, packed: at most ``size`` events and
    ``max_bytes`` bytes (an event bigger than that is never kept)."""

    def __init__(self, size: int, start_revision: int, max_bytes: int = 64 * MiB,
                 page_bytes: int = MiB) -> None:
        self.size = max(1, size)
        self.max_bytes = max_bytes
        self.page_bytes = page_bytes
        self.events: deque[tuple[int, bytes]] = deque()
        self.bytes = 0
        #: the oldest revision R such that every change after R is still here
        self.floor = start_revision

    def add(self, event: dict[str, Any]) -> bytes:
        """Keep ``event``; returns its packed form (what the change feed publishes)."""
        packed = protocol.pack(event)
        self.events.append((event["revision"], packed))
        self.bytes += len(packed) + EVENT_OVERHEAD
        events = self.events
        while events and (len(events) > self.size or self.bytes > self.max_bytes):
            rev, old = events.popleft()
            self.bytes -= len(old) + EVENT_OVERHEAD
            self.floor = rev
        return packed

    def since(self, revision: int, limit: int = 10_000) -> list[dict[str, Any]]:
        """:meth:`since_packed`, decoded."""
        return [unpack_kept(p) for p in self.since_packed(revision, limit)]

    def since_packed(self, revision: int, limit: int = 10_000) -> list[bytes]:
        """Events after ``revision``, oldest first, up to ``limit`` events or about
        ``page_bytes`` (at least one), as kept: a reply puts them in as they are (a
        1 MiB page of 2622 events took the loop 45-57 ms decoded and packed again, 2-6 ms
        so). The caller asks again for the rest."""
        if revision < self.floor:
            raise CompactedError(
                f"history before revision {self.floor} is compacted (asked for after "
                f"{revision}); read the full store and watch from its revision",
                {"compacted_revision": self.floor},
            )
        if not self.events or revision >= self.events[-1][0]:
            return []
        skip = self._first_after(revision)
        out: list[bytes] = []
        size = 0
        for i in range(skip, len(self.events)):
            packed = self.events[i][1]
            if out and (len(out) >= limit or size + len(packed) > self.page_bytes):
                break
            out.append(packed)
            size += len(packed)
        return out

    def _first_after(self, revision: int) -> int:
        """Index of the first event after ``revision``: direct when revisions go up
        by one (the journal), else bisected (etcd's increase by more)."""
        events = self.events
        skip = max(0, revision - events[0][0] + 1)
        if skip < len(events) and events[skip][0] > revision and (
                skip == 0 or events[skip - 1][0] <= revision):
            return skip
        return bisect.bisect_right(events, revision, key=lambda e: e[0])
