"""Paged reads of the whole store that stay consistent while writes go on.

The first page of a large store captures the store's lines (a pointer copy: lines
are immutable once stored, and each holds its id), so later pages come from the
same revision without holding the loop; a page decodes only its own flows.
Cursors are few and expire. That copy is the one step of a listing that grows with
the store: 40-65 ms of the loop at 1M flows (it touches every line; copying the ids
as well took 73-86 ms in the same hour), after which the cyclic GC is told never to
walk it. Listings begun at the same state share it.

A page ends at ``limit`` flows or once it holds about ``page_bytes`` (at least
one flow): what a client that never reads can make the daemon queue is a
number of pages, so each page must be bounded in bytes, not only in flows.

A client that asks for ``json`` gets the page's lines joined into one JSON object
of id to flow (``PAGE_JSON``), each line as the store holds it: the loop copies
about a megabyte and decodes nothing (a page of ~2400 flows: about 1 ms, against
30 ms to decode and pack each flow, which every other client waited behind while
one read a million flows). Otherwise each flow is decoded and packed once, to
count it, and the reply is built from those parts (what older clients read); such
a page ends after a quarter of ``page_bytes``, so that an older client's listing
holds the loop for a quarter as long at a time (about 8 ms a page, not 30).
"""

from __future__ import annotations

import gc
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson
from flowd_client.errors import NotFoundError
from flowd_client.protocol import (
    DEFAULT_PAGE,
    PAGE_JSON,
    Packed,
    pack,
    packed_array,
    packed_map,
)

from .store import Store

MAX_CURSORS = 16
#: a decoded page ends after this share of ``page_bytes``: it costs the loop a decode
#: and a pack per flow, about 10 µs, where a JSON page costs a copy of its bytes
DECODED_SHARE = 4
CURSOR_TTL = 60.0
#: a cursor's copy of this many lines or more is frozen out of the cyclic GC's walks
#: (a full collection visited every line of it: 77 ms with one cursor of 1M flows alive)
FREEZE_FROM = 10_000


@dataclass
class _Cursor:
    lines: list[bytes]
    pos: int
    revision: int
    current: str | None
    expires: float
    #: the store's load the lines are of (a revision counts from its load)
    generation: int


class Pager:
    def __init__(self, page_bytes: int = 1 << 20) -> None:
        self.page_bytes = page_bytes
        self.cursors: dict[str, _Cursor] = {}

    def page(self, store: Store, args: dict[str, Any]) -> Packed:
        limit = args.get("limit") or DEFAULT_PAGE
        token = args.get("cursor")
        now = time.monotonic()
        for t in [t for t, c in self.cursors.items() if c.expires < now]:
            del self.cursors[t]
        if token is None:
            cur = _Cursor(self._capture(store), 0, store.revision, store.current_flow_id,
                          0.0, store.generation)
        else:
            found = self.cursors.pop(token, None)
            if found is None:
                raise NotFoundError("paging cursor expired or unknown; start the listing again")
            cur = found
        start = cur.pos
        if args.get("json"):
            end = self._json_end(cur, start, limit)
            flows = (PAGE_JSON, pack(b"{" + b",".join(cur.lines[start:end]) + b"}"))
        else:
            parts = self._parts(cur, start, limit)
            end = start + len(parts)
            flows = ("flows", packed_array(parts))
        nxt = None
        if end < len(cur.lines):
            nxt = secrets.token_hex(8)
            if len(self.cursors) >= MAX_CURSORS:
                self.cursors.pop(next(iter(self.cursors)))
            cur.pos, cur.expires = end, now + CURSOR_TTL
            self.cursors[nxt] = cur
        return packed_map({flows[0]: flows[1], "next": pack(nxt),
                           "revision": pack(cur.revision), "current_flow_id": pack(cur.current)})

    def _capture(self, store: Store) -> list[bytes]:
        """The store's lines now: those of a listing begun at this very state if one is
        still paging (many tools starting at once copy them once), else a fresh copy."""
        for other in self.cursors.values():
            if (other.revision, other.generation) == (store.revision, store.generation):
                return other.lines
        if len(store.flows.lines) < FREEZE_FROM:
            return list(store.flows.lines.values())
        # as the snapshotter's view does: what is younger than the last freeze is
        # collected first (a freeze would keep any cyclic garbage in it for good)
        gc.collect()
        lines = list(store.flows.lines.values())
        gc.freeze()  # acyclic, lines only: no collection should walk it
        return lines

    def _json_end(self, cur: _Cursor, start: int, limit: int) -> int:
        """Where a JSON page from ``start`` ends: ``limit`` lines or about ``page_bytes``
        of them, at least one."""
        size, cap, lines = 0, self.page_bytes, cur.lines
        end = min(len(lines), start + limit)
        for i in range(start, end):
            size += len(lines[i]) + 1
            if size > cap and i > start:
                return i
        return end

    def _parts(self, cur: _Cursor, start: int, limit: int) -> list[bytes]:
        parts: list[bytes] = []
        size, cap = 0, self.page_bytes // DECODED_SHARE
        for line in cur.lines[start:start + limit]:
            part = pack(_flow(line))
            size += len(part)
            if parts and size > cap:
                break
            parts.append(part)
        return parts


def _flow(line: bytes) -> Any:
    """The flow of a store line (``    "<id>": {...}``, a JSON object's member)."""
    return next(iter(orjson.loads(b"{%s}" % line).values()))
