"""The layouts a valid flow comes in, each taken with the least work: flowd's own
(canonical key order, taken as it is), the old tools' five keys (completed in
place), and any other order or a missing ``id``/``revision`` (rebuilt once).

The per-flow fast paths of :mod:`.migrate`; each returns None for a flow that
needs repairing, which the migrator then does field by field, with notes.
"""

from __future__ import annotations

from typing import Any

#: keys of a flow that the schema defines, in the order a normalized flow has them
FLOW_KEYS = ("id", "name", "plans", "created", "updated", "revision")
#: what the old tools write of a flow (the seed's ``asdict``), in this order
OLD_TOOL_KEYS = FLOW_KEYS[:5]
#: "the key is absent" (None is a value a file can hold)
MISSING: Any = object()


def core_ok(key: str | None, item: dict[str, Any], flows: dict[str, Any]) -> bool:
    """The five keys the old tools write hold valid values, and the id is new."""
    fid = item["id"]
    return (type(fid) is str and fid != "" and (key is None or fid == key) and fid not in flows
            and type(item["name"]) is str and type(item["plans"]) is list
            and type(item["created"]) is str and type(item["updated"]) is str)


def as_is(key: str | None, item: dict[str, Any], flows: dict[str, Any]) -> dict[str, Any] | None:
    """A flow already in canonical key order (as flowd writes it): taken unchanged."""
    return item if core_ok(key, item, flows) and type(item["revision"]) is int else None


def old_tool_form(key: str | None, item: dict[str, Any],
                  flows: dict[str, Any]) -> dict[str, Any] | None:
    """A flow as the old tools write it (the five keys in canonical order, nothing else):
    completed in place, since the parser's dict is ours (a new dict per flow was about a
    sixth of checking an old tool's file), to the key order of :func:`rebuilt`."""
    if core_ok(key, item, flows):
        item["revision"] = 0
        return item
    return None


def rebuilt(key: str | None, item: dict[str, Any], flows: dict[str, Any]) -> dict[str, Any] | None:
    """A valid flow in another key order or without ``id``/``revision``: rebuilt, in order."""
    raw = item.get("id", MISSING)
    fid = raw if key is None else key
    if (type(fid) is not str or fid == "" or fid in flows
            or (raw is not MISSING and raw != fid)):
        return None
    name, plans = item.get("name"), item.get("plans")
    created, updated = item.get("created"), item.get("updated")
    rev = item.get("revision", MISSING)
    known = 4 + (raw is not MISSING) + (rev is not MISSING)
    if rev is MISSING:
        rev = 0
    if (type(name) is not str or type(plans) is not list or type(created) is not str
            or type(updated) is not str or type(rev) is not int):
        return None
    new = {"id": fid, "name": name, "plans": plans,
           "created": created, "updated": updated, "revision": rev}
    if len(item) > known:
        # the known keys hold the same values: update() appends only the unknown
        # ones, in their order, at C speed (and is a no-op for the rest)
        new.update(item)
    return new
