"""Flows and merges as tests/unit/test_merge*.py build them: the daemon's stored
flows, what an old tool writes back, and the merge against a base given by its flows."""

from __future__ import annotations

import json

from flowd import merge
from flowd.digests import digest
from flowd.merge import MergeResult

T0 = "2024-05-01T09:00:00"
T1 = "2024-05-02T09:00:00"
T2 = "2024-05-03T09:00:00"
CORE = ("id", "name", "plans", "created", "updated")


def stored_flow(fid: str, name: str = "n", updated: str = T0, revision: int = 1, **extra) -> dict:
    """A flow as the daemon stores it (with revision, maybe extra keys)."""
    return {"id": fid, "name": name, "plans": [{"id": "p1", "text": "t"}],
            "created": T0, "updated": updated, "revision": revision, **extra}


def tool_rewrite(flows: dict[str, dict]) -> dict[str, dict]:
    """What the old tool writes back: core keys only, freshly parsed objects."""
    stripped = {fid: {k: f[k] for k in CORE if k in f} for fid, f in flows.items()}
    return json.loads(json.dumps(stripped))


def three_way_merge(base: dict, base_cur, ours: dict, ours_cur, theirs: dict,
                    theirs_cur) -> MergeResult:
    """The merge against a known base given by its flows."""
    fresh = iter(f"fresh{i}" for i in range(1000))
    return merge.three_way_merge(
        merge.Base({fid: digest(f) for fid, f in base.items()}, base_cur), ours, ours_cur,
        theirs, theirs_cur, ours_digest=lambda fid: digest(ours[fid]) if fid in ours else None,
        new_id=lambda: next(fresh))


def apply_changes(ours: dict[str, dict], result: MergeResult) -> dict[str, dict]:
    """Apply the changes the way the store would, checking each precondition."""
    store = dict(ours)
    for op, fid, flow in result.changes:
        if op == "merge_add":
            assert fid not in store and flow is not None
            store[fid] = flow
        elif op == "merge_update":
            assert fid in store and flow is not None
            store[fid] = flow
        else:
            assert op == "merge_delete" and fid in store and flow is None
            del store[fid]
    return store
