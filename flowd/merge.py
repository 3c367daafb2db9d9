"""Three-way merge of a stray writer's flows.json ("theirs") into the live store ("ours").

The base is what the tool loaded, as flowd remembers it: a digest per flow
(:mod:`flowd.digests`) and the current flow, never a timestamp. Per flow:

* changed only by the tool -> the tool's version;
* changed only by flowd since the base -> flowd's;
* changed by both -> flowd's acknowledged version stays live; the tool's
  version (or its deletion) is a conflict, kept aside by the caller;
* in the base and gone from theirs, unchanged by flowd -> deleted;
* new in theirs -> added, under a fresh id if ours holds a different flow
  with that id.

With no base (:class:`Unknown`), the tool's additions and edits come in and no
deletion does; see :func:`_unknown_flow` for how an edit is told from a stale
copy without one. Nothing here reads ``updated`` or ``created``.

Pure (no I/O, nothing from the rest of flowd). One C-level pass pairs every
flow of theirs with ours and drops those the tool holds exactly as ours does
(the usual case for almost all of them); only the rest are digested.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import compress, repeat

from .digests import Digest, digest, same

__all__ = ["Base", "MergeResult", "Unknown", "suspects_of", "three_way_merge"]

REVISION = "revision"
_EMPTY: dict = {}  # stands in for "not in ours"; never mutated
#: reports are logged and shown to people: id lists are capped (the aside file has all)
REPORT_ID_LIMIT = 20

OP_ADD = "merge_add"
OP_UPDATE = "merge_update"
OP_DELETE = "merge_delete"

Change = tuple[str, str, "dict | None"]


@dataclass
class Base:
    """The file the tool loaded: a digest per flow id, and its current flow."""

    digests: Mapping[str, Digest]
    current: str | None


@dataclass
class Unknown:
    """No base: the versions of an id flowd remembers from any file (stale copies)."""

    known: Callable[[str], Collection[Digest]]


@dataclass
class MergeResult:
    """What the caller applies (``changes``, in order) and what it keeps aside.

    Flows in ``changes`` never carry ``revision``. ``conflicts`` maps an id to
    the tool's version that was not applied (None: the tool deleted a flow
    flowd changed); ``replaced`` holds ours' versions that an edit replaced
    where the base was unknown; ``skipped_deletions`` the ids the tool's file
    lacks that flowd kept for want of a base.
    """

    changes: list[Change]
    current_flow_id: str | None
    conflicts: dict[str, dict | None] = field(default_factory=dict)
    replaced: dict[str, dict] = field(default_factory=dict)
    skipped_deletions: list[str] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)
    report: dict = field(default_factory=dict)


@dataclass
class _Acc:
    deletes: list[Change] = field(default_factory=list)
    updates: list[Change] = field(default_factory=list)
    adds: list[Change] = field(default_factory=list)
    result: MergeResult = field(default_factory=lambda: MergeResult([], None))


def suspects_of(ours: Mapping[str, dict], theirs: Mapping[str, dict],
                candidates: Iterable[str] | None = None) -> list[str]:
    """Ids of theirs whose flow is not a sub-map of ours' (theirs order), in C.

    A flow the old tool merely re-serialised (``revision`` and unknown keys
    dropped) is a sub-map of ours' and needs no digest: whatever the base, the
    merge keeps ours for it. ``candidates``: the only ids that may be suspects, in
    theirs order (a cheaper pass cleared the rest); only those are compared.
    """
    if candidates is not None:
        return [fid for fid in candidates
                if not theirs[fid].items() <= ours.get(fid, _EMPTY).items()]
    same_order = len(theirs) == len(ours) and list(theirs) == list(ours)
    paired = iter(ours.values()) if same_order else map(ours.get, theirs, repeat(_EMPTY))
    kept = map(operator.le, map(dict.items, theirs.values()), map(dict.items, paired))
    return list(compress(theirs, map(operator.not_, kept)))


def _taken_in(theirs: Mapping, keep_from: Mapping | None, fid: str | None = None) -> dict:
    """Theirs' flow plus the keys of ``keep_from`` that the old tool dropped (a copy)."""
    flow = dict(theirs)
    flow.pop(REVISION, None)
    if keep_from is not None:
        for key, value in keep_from.items():
            if key not in flow and key != REVISION:
                flow[key] = value
    if fid is not None:
        flow["id"] = fid
    return flow


def _add(acc: _Acc, fid: str, flow: dict, ours: Mapping, theirs: Mapping,
         new_id: Callable[[], str]) -> None:
    """New in theirs: added, under a fresh id when ours has a different flow there."""
    if fid in ours:
        fresh = new_id()
        while fresh in ours or fresh in theirs:
            fresh = new_id()
        acc.result.renamed[fid] = fresh
        acc.adds.append((OP_ADD, fresh, _taken_in(flow, None, fresh)))
    else:
        acc.adds.append((OP_ADD, fid, _taken_in(flow, None)))


def _known_flow(acc: _Acc, fid: str, base: Base, ours: Mapping, theirs: Mapping,
                ours_digest: Callable[[str], Digest | None],
                new_id: Callable[[], str]) -> None:
    """One suspect of theirs against a known base."""
    flow = theirs[fid]
    b = base.digests.get(fid)
    t = digest(flow)
    if same(t, b):
        return  # the tool did not touch it: ours, whatever flowd did since
    if b is None:
        _add(acc, fid, flow, ours, theirs, new_id)
        return
    mine = ours.get(fid)
    if mine is not None and same(ours_digest(fid), b):
        acc.updates.append((OP_UPDATE, fid, _taken_in(flow, mine)))
    else:  # flowd changed or deleted it too: flowd's stays
        acc.result.conflicts[fid] = _taken_in(flow, None)


def _known_missing(acc: _Acc, fid: str, base: Base,
                   ours_digest: Callable[[str], Digest | None]) -> None:
    """A flow of ours that theirs lacks, against a known base."""
    b = base.digests.get(fid)
    if b is None:
        return  # flowd added it after the tool loaded
    if same(ours_digest(fid), b):
        acc.deletes.append((OP_DELETE, fid, None))
    else:
        acc.result.conflicts[fid] = None  # deleted by the tool, changed by flowd


def _horizon(ours: Mapping[str, dict], theirs: Mapping[str, dict], suspects: set[str]) -> int:
    """The newest flowd revision the tool's file provably holds: the highest
    ``revision`` among flows it has exactly as ours has them. The tool loaded a
    file at least that new, so an ours flow not changed after it was in it."""
    best = -1
    for fid in theirs:
        if fid not in suspects:
            rev = ours[fid].get(REVISION)
            if type(rev) is int and rev > best:
                best = rev
    return best


def _unknown_flow(acc: _Acc, fid: str, unknown: Unknown, horizon: int, ours: Mapping,
                  theirs: Mapping, new_id: Callable[[], str]) -> None:
    """One suspect of theirs without a base: a stale copy of a version flowd had is
    no edit; an edit of a flow flowd changed after the horizon is a conflict."""
    flow = theirs[fid]
    t = digest(flow)
    versions = unknown.known(fid)
    if any(same(t, v) for v in versions):
        return  # a version flowd had: flowd changed or deleted it since
    mine = ours.get(fid)
    if mine is None:
        if versions:
            acc.result.conflicts[fid] = _taken_in(flow, None)  # flowd deleted it
        else:
            _add(acc, fid, flow, ours, theirs, new_id)
        return
    rev = mine.get(REVISION)
    if type(rev) is int and rev <= horizon:
        acc.updates.append((OP_UPDATE, fid, _taken_in(flow, mine)))
        acc.result.replaced[fid] = mine
    else:
        acc.result.conflicts[fid] = _taken_in(flow, None)


def _unknown_missing(acc: _Acc, fid: str, horizon: int, ours: Mapping) -> None:
    rev = ours[fid].get(REVISION)
    if type(rev) is int and rev <= horizon:
        acc.result.skipped_deletions.append(fid)  # it was in what the tool loaded


def _pick_current(acc: _Acc, base: Base | None, ours: Mapping[str, dict],
                  ours_current: str | None, theirs_current: str | None) -> str | None:
    """The tool's choice if it changed it and that flow exists, else flowd's."""
    deleted = {fid for _, fid, _ in acc.deletes}
    added = [fid for _, fid, _ in acc.adds]
    renamed = acc.result.renamed
    if theirs_current in renamed:
        theirs_current = renamed[theirs_current]

    def exists(fid: str | None) -> bool:
        return fid is not None and ((fid in ours and fid not in deleted) or fid in added)

    changed = theirs_current != base.current if base is not None else theirs_current in added
    if changed and exists(theirs_current):
        return theirs_current
    if exists(ours_current):
        return ours_current
    for fid in ours:
        if fid not in deleted:
            return fid
    return added[0] if added else None


def _report(res: MergeResult, acc: _Acc) -> dict:
    cap = REPORT_ID_LIMIT
    return {"added": len(acc.adds), "updated": len(acc.updates), "deleted": len(acc.deletes),
            "conflicts": len(res.conflicts), "skipped_deletions": len(res.skipped_deletions),
            "conflict_ids": list(res.conflicts)[:cap],
            "skipped_deletion_ids": res.skipped_deletions[:cap],
            "renamed": dict(list(res.renamed.items())[:cap])}


def three_way_merge(base: Base | Unknown, ours: Mapping[str, dict], ours_current: str | None,
                    theirs: Mapping[str, dict], theirs_current: str | None, *,
                    ours_digest: Callable[[str], Digest | None],
                    new_id: Callable[[], str],
                    suspects: list[str] | None = None,
                    missing: list[str] | None = None) -> MergeResult:
    """Merge theirs into ours; nothing passed in is mutated.

    ``ours_digest(fid)`` is the digest of ours' flow (the caller may cache
    them); ``new_id()`` a fresh id candidate. Changes come deletions first,
    then updates, then adds, so applying them in order never re-adds an id
    that is still present. ``suspects``: :func:`suspects_of` if the caller has it;
    ``missing``: ours' ids that theirs lacks, in ours' order, likewise.
    """
    acc = _Acc()
    if suspects is None:
        suspects = suspects_of(ours, theirs)
    new_ids = sum(1 for fid in suspects if fid not in ours)
    if missing is None:
        missing = [fid for fid in ours if fid not in theirs] if len(theirs) - new_ids < len(
            ours) else []
    if isinstance(base, Base):
        for fid in missing:
            _known_missing(acc, fid, base, ours_digest)
        for fid in suspects:
            _known_flow(acc, fid, base, ours, theirs, ours_digest, new_id)
        known_base: Base | None = base
    else:
        horizon = _horizon(ours, theirs, set(suspects))
        for fid in missing:
            _unknown_missing(acc, fid, horizon, ours)
        for fid in suspects:
            _unknown_flow(acc, fid, base, horizon, ours, theirs, new_id)
        known_base = None
    res = acc.result
    res.changes = acc.deletes + acc.updates + acc.adds
    res.current_flow_id = _pick_current(acc, known_base, ours, ours_current, theirs_current)
    res.report = _report(res, acc)
    return res
