"""The change feed's memory: recent revisions for ``watch(since=R)``, and retry keys.

Both are bounded: a watcher that asks for history older than the window gets
COMPACTED and resyncs; a retried write older than the key window is applied
again (the window is documented in the README).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

from flowd_client.errors import CompactedError

from .store import Store


def build_event(record: dict[str, Any], store: Store) -> dict[str, Any]:
    """The published form of a record, taken after it was applied to ``store``."""
    changes = []
    for op, fid, flow in record["changes"]:
        if op == "set_current":
            flow = store.flows.get(fid)
        changes.append({"op": op, "flow_id": fid, "flow": flow})
    event = {"revision": record["rev"], "ts": record["ts"],
             "current_flow_id": record["current"], "changes": changes}
    if "merge" in record:  # a stray merge: what it did, next to the flow changes
        event["merge"] = record["merge"]
    return event


class History:
    """The last ``size`` revisions' events, oldest first."""

    def __init__(self, size: int, start_revision: int) -> None:
        self.events: deque[dict[str, Any]] = deque(maxlen=max(1, size))
        #: the oldest revision R such that every change after R is still here
        self.floor = start_revision

    def add(self, event: dict[str, Any]) -> None:
        if len(self.events) == self.events.maxlen:
            self.floor = self.events[0]["revision"]
        self.events.append(event)

    def since(self, revision: int, limit: int = 10_000) -> list[dict[str, Any]]:
        if revision < self.floor:
            raise CompactedError(
                f"history before revision {self.floor} is compacted (asked for after "
                f"{revision}); read the full store and watch from its revision",
                {"compacted_revision": self.floor},
            )
        if not self.events or revision >= self.events[-1]["revision"]:
            return []
        skip = max(0, revision - self.events[0]["revision"] + 1)
        out = []
        for i in range(skip, len(self.events)):
            out.append(self.events[i])
            if len(out) >= limit:
                break
        return out


def _weight(value: Any) -> int:
    """Roughly how many pointers a kept reply pins: a returned flow keeps its
    plans list (that version's) alive after later writes replace it."""
    if type(value) is dict:
        plans = value.get("plans")
        return 1 + (len(plans) if type(plans) is list else 0)
    if type(value) is list:
        return 1 + sum(_weight(v) for v in value)
    return 1


class RetryKeys:
    """Idempotency keys of recent writes and their first replies (LRU, bounded).

    A reply is kept whole (ok, result or error, revision), so a retry gets the
    very reply the first attempt got, even after other writes. Bounded by
    count and by weight, so replies carrying big flows cannot pin old versions
    without limit.
    """

    def __init__(self, size: int = 100_000, max_weight: int = 2_000_000) -> None:
        self.size = size
        self.max_weight = max_weight
        self.weight = 0
        self.replies: OrderedDict[tuple[str, int], tuple[bool, Any, int | None, int]] = (
            OrderedDict())

    def get(self, key: tuple[str, int]) -> tuple[bool, Any, int | None] | None:
        got = self.replies.get(key)
        return None if got is None else got[:3]

    def put(self, key: tuple[str, int], ok: bool, value: Any, rev: int | None = None) -> None:
        w = _weight(value) if ok else 1
        old = self.replies.pop(key, None)
        if old is not None:
            self.weight -= old[3]
        self.replies[key] = (ok, value, rev, w)
        self.weight += w
        while self.replies and (len(self.replies) > self.size or self.weight > self.max_weight):
            self.weight -= self.replies.popitem(last=False)[1][3]
