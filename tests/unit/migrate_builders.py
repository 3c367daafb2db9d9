"""Builders for normalize() inputs, shared by test_migrate*.py: legacy flows,
clean 3.0 documents, canonical flows, and fresh ids and clocks made predictable."""

from __future__ import annotations

from typing import Any

import pytest

from flowd.storage import migrate

T0 = "2024-05-01T09:00:00"


def flow(fid: str | None = "flow_a", **extra: Any) -> dict[str, Any]:
    """A complete legacy flow, optionally without id; ``extra`` overrides/adds keys."""
    f: dict[str, Any] = {"name": "n", "plans": [], "created": T0, "updated": T0}
    if fid is not None:
        f = {"id": fid, **f}
    f.update(extra)
    return f


def v3(*flows: dict[str, Any], current: str | None = None, **top: Any) -> dict[str, Any]:
    """A clean 3.0 document (flows in canonical form)."""
    doc = {"version": "3.0", "meta": {"last_saved": T0, "file_revision": 3, "revision": 9},
           "current_flow_id": current or (flows[0]["id"] if flows else None),
           "flows": {f["id"]: f for f in flows}}
    doc.update(top)
    return doc


def canon(fid: str, rev: int = 1, **extra: Any) -> dict[str, Any]:
    return {"id": fid, "name": "n", "plans": [{"p": 1}], "created": T0, "updated": T0,
            "revision": rev, **extra}


def determinize(monkeypatch: pytest.MonkeyPatch) -> None:
    """The clock says NOW (ids of flows without one are derived from content already)."""
    monkeypatch.setattr(migrate, "_now", lambda: "NOW")
