"""Paged reads of the whole store that stay consistent while writes go on.

The first page of a large store captures the list of flow dicts (a pointer
copy: flows are immutable once stored), so later pages come from the same
revision without holding the loop. Cursors are few and expire.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from flowd_client.errors import NotFoundError
from flowd_client.protocol import DEFAULT_PAGE

from .store import Store

MAX_CURSORS = 16
CURSOR_TTL = 60.0


@dataclass
class _Cursor:
    flows: list[dict[str, Any]]
    pos: int
    revision: int
    current: str | None
    expires: float


class Pager:
    def __init__(self) -> None:
        self.cursors: dict[str, _Cursor] = {}

    def page(self, store: Store, args: dict[str, Any]) -> dict[str, Any]:
        limit = args.get("limit") or DEFAULT_PAGE
        token = args.get("cursor")
        now = time.monotonic()
        for t in [t for t, c in self.cursors.items() if c.expires < now]:
            del self.cursors[t]
        if token is None:
            if len(store.flows) <= limit:
                return {"flows": list(store.flows.values()), "next": None,
                        "revision": store.revision, "current_flow_id": store.current_flow_id}
            cur = _Cursor(list(store.flows.values()), 0, store.revision,
                          store.current_flow_id, 0.0)
        else:
            found = self.cursors.pop(token, None)
            if found is None:
                raise NotFoundError("paging cursor expired or unknown; start the listing again")
            cur = found
        start, end = cur.pos, cur.pos + limit
        nxt = None
        if end < len(cur.flows):
            nxt = secrets.token_hex(8)
            if len(self.cursors) >= MAX_CURSORS:
                self.cursors.pop(next(iter(self.cursors)))
            cur.pos, cur.expires = end, now + CURSOR_TTL
            self.cursors[nxt] = cur
        return {"flows": cur.flows[start:end], "next": nxt, "revision": cur.revision,
                "current_flow_id": cur.current}
