"""What readers get back: ``Flow`` (the seed's dataclass, plus ``revision``) and ``Change``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .protocol import FLOW_CORE_KEYS as _CORE


@dataclass(frozen=True, slots=True)
class Flow:
    """One flow as the daemon holds it. Read-only: change it with ``update_flow``.

    ``extra`` keeps keys a newer tool stored in the flow, so nothing is dropped.
    """

    id: str
    name: str
    plans: list[dict[str, Any]] = field(default_factory=list)
    created: str = ""
    updated: str = ""
    revision: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Flow:
        extra = {k: v for k, v in d.items() if k not in _CORE} if len(d) > 6 else {}
        return cls(d["id"], d["name"], d["plans"], d.get("created", ""),
                   d.get("updated", ""), d.get("revision", 0), extra)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "plans": self.plans, "created": self.created,
                "updated": self.updated, "revision": self.revision, **self.extra}


def flow_or_none(d: dict[str, Any] | None) -> Flow | None:
    return None if d is None else Flow.from_wire(d)


@dataclass(frozen=True, slots=True)
class Change:
    """One change from the feed: ``flow`` is the new flow, or None when it was deleted."""

    revision: int
    op: str
    flow_id: str
    flow: Flow | None
    current_flow_id: str | None
    ts: str = ""


def changes_of(event: dict[str, Any]) -> list[Change]:
    """Split one published revision (``protocol.build_event``'s shape) into its changes
    (a batch holds several)."""
    rev, cur, ts = event["revision"], event.get("current_flow_id"), event.get("ts", "")
    return [Change(rev, c["op"], c["flow_id"], flow_or_none(c["flow"]), cur, ts)
            for c in event["changes"]]
