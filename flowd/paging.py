"""Paged reads of the whole store that stay consistent while writes go on.

The first page of a large store captures the store's ids and lines (two
pointer copies: lines are immutable once stored), so later pages come from the
same revision without holding the loop; a page decodes only its own flows.
Cursors are few and expire.

A page ends at ``limit`` flows or once it holds about ``page_bytes`` (at least
one flow): what a client that never reads can make the daemon queue is a
number of pages, so each page must be bounded in bytes, not only in flows.
Each flow is packed once, to count it, and the reply is built from those parts.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from flowd_client.errors import NotFoundError
from flowd_client.protocol import DEFAULT_PAGE, Packed, pack, packed_array, packed_map

from .flow_lines import decode
from .store import Store

MAX_CURSORS = 16
CURSOR_TTL = 60.0


@dataclass
class _Cursor:
    ids: list[str]
    lines: list[bytes]
    pos: int
    revision: int
    current: str | None
    expires: float


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
            lines = store.flows.lines
            cur = _Cursor(list(lines), list(lines.values()), 0, store.revision,
                          store.current_flow_id, 0.0)
        else:
            found = self.cursors.pop(token, None)
            if found is None:
                raise NotFoundError("paging cursor expired or unknown; start the listing again")
            cur = found
        start = cur.pos
        parts = self._parts(cur, start, limit)
        end = start + len(parts)
        nxt = None
        if end < len(cur.ids):
            nxt = secrets.token_hex(8)
            if len(self.cursors) >= MAX_CURSORS:
                self.cursors.pop(next(iter(self.cursors)))
            cur.pos, cur.expires = end, now + CURSOR_TTL
            self.cursors[nxt] = cur
        return packed_map({"flows": packed_array(parts), "next": pack(nxt),
                           "revision": pack(cur.revision), "current_flow_id": pack(cur.current)})

    def _parts(self, cur: _Cursor, start: int, limit: int) -> list[bytes]:
        parts: list[bytes] = []
        size, cap = 0, self.page_bytes
        ids, lines = cur.ids, cur.lines
        for i in range(start, min(len(ids), start + limit)):
            part = pack(decode(ids[i], lines[i]))
            size += len(part)
            if parts and size > cap:
                break
            parts.append(part)
        return parts
