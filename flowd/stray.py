"""Absorbing a stray writer: an old tool rewrote flows.json behind flowd's back.

Its file is kept aside, merged three ways (:mod:`flowd.merge`) against the
file the tool loaded, as far as flowd can tell it from the tool's
``meta.file_revision`` (:func:`pick_base`), and the merge is one journaled
change with its own revision. Losing versions of both-sides conflicts go to an
aside file.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from .merge import theirs_differs, three_way_merge
from .service import Service
from .snapshotter import Generation, Snapshotter
from .storage.evidence import keep_aside, write_aside
from .storage.loader import load_file
from .storage.migrate import CorruptFileError
from .storage.snapshot import WRITTEN, fingerprint
from .store import Store

log = logging.getLogger("flowd.stray")


def absorb_stray_file(service: Service, snap: Snapshotter, data_dir: Path) -> None:
    """flows.json changed behind our back: keep it aside, merge it in, rewrite it."""
    path = snap.files.path
    try:
        st = os.stat(path)
        got = load_file(path)
    except FileNotFoundError:
        log.warning("flows.json was removed behind flowd's back; writing it again")
        snap.files.known = None
        snap.note_change(0.0)
        return
    except CorruptFileError as exc:
        aside = keep_aside(path, "stray-corrupt")
        log.error("!!! flows.json was overwritten with an unreadable file (%s); kept as %s; "
                  "flowd writes its own state back", exc, aside.name)
        snap.files.known = fingerprint(st)
        snap.files.rotate_from = WRITTEN
        snap.note_change(0.0)
        return
    evidence = keep_aside(path, "stray")
    base_flows, base_current = pick_base(snap, service.store, got.doc)
    merge_into(service, snap, data_dir, got.doc, base_flows, base_current, evidence)
    snap.files.known = fingerprint(st)
    snap.files.rotate_from = WRITTEN  # flows.json.prev: flowd's last file, not the tool's


def _file_revision(doc: dict[str, Any]) -> int | None:
    value = (doc.get("meta") or {}).get("file_revision")
    return value if type(value) is int else None


def pick_base(snap: Snapshotter, store: Store,
              theirs: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """What the stray tool loaded before its edits, as far as flowd can tell: the base.

    An old tool writes the ``file_revision`` it loaded plus one; flowd knows the
    revision, time and (if recent) flows of each file it wrote or merged. The
    base holds the live flows not changed since that file (they are in it as
    they are now), plus theirs' copies that are no edit: equal to the copy in
    that file, or not updated since it was written, so that a flow flowd changed
    or deleted since is never reverted or brought back by a stale copy. Flows
    changed on both sides meet as conflicts (newer ``updated`` wins), and flows
    added since are never read as deleted by the tool.

    Tool saves that flowd did not see (two between two checks) hide files: the
    claimed file may be a tool's that overwrote flowd's latest, or a number
    flowd never saw. Then the tool's file descends from one of the two newest
    files flowd knows below its number: the older counts for "not changed
    since", the copies of both for "no edit".
    """
    fr = _file_revision(theirs)
    numbers = [n for n in snap.generations if fr is not None and n < fr]
    if fr is None or not numbers:
        log.warning("the stray flows.json was not edited from a file flowd wrote "
                    "(file_revision %s): merging without deletions", fr)
        return {}, theirs.get("current_flow_id")
    gens = snap.generations
    claimed = gens[numbers[-1]]
    if numbers[-1] == fr - 1 and numbers[-1] != next(reversed(gens)):
        refs = [claimed]  # an older file of flowd's: no unseen tool file can hide it
    else:
        refs = [gens[n] for n in numbers[-2:]]
        log.info("stray file %d may descend from a tool file flowd did not see: merging "
                 "against flowd's files %s", fr, numbers[-2:])
    base = _base_of(store, theirs, refs)
    current = claimed.current if numbers[-1] == fr - 1 else theirs.get("current_flow_id")
    return base, current


def _base_of(store: Store, theirs: dict[str, Any], refs: list[Generation]) -> dict[str, Any]:
    """Live flows unchanged since the oldest of ``refs``, plus theirs' copies that are
    no edit (equal to a copy in ``refs``, or not updated since the oldest was written)."""
    ref = refs[0]
    only = ref.flows if ref.partial else None
    base = {fid: flow for fid, flow in store.flows.items()
            if flow.get("revision", 0) <= ref.revision and (only is None or fid in only)}
    copies = [g.flows for g in refs if g.flows is not None]
    for fid, flow in theirs["flows"].items():
        if _copy_of(fid, flow, copies) or (
                fid not in base and _not_updated_since(flow, ref.captured)):
            base[fid] = flow
    return base


def _copy_of(fid: str, flow: dict[str, Any], copies: list[dict[str, Any]]) -> bool:
    return any(fid in copy and not theirs_differs(copy[fid], flow) for copy in copies)


def _not_updated_since(flow: dict[str, Any], captured: str) -> bool:
    updated = flow.get("updated")
    try:
        return (isinstance(updated, str) and bool(captured)
                and datetime.fromisoformat(updated) <= datetime.fromisoformat(captured))
    except (ValueError, TypeError):  # not ISO, or one has a UTC offset and one not
        return False


def _remember_stray_file(snap: Snapshotter, theirs: dict[str, Any], revision: int) -> None:
    """The tool's file is now merged at ``revision``: another tool may load it next."""
    fr = _file_revision(theirs)
    if fr is None:
        return
    saved = (theirs.get("meta") or {}).get("last_saved")
    snap.generations[fr] = Generation(revision, theirs.get("current_flow_id"), theirs["flows"],
                                      saved if isinstance(saved, str) else "", partial=True)


def _forget_numbers_from(snap: Snapshotter, fr: int | None) -> None:
    """The tool's file took number ``fr``: flowd's own files numbered ``fr`` or more are
    no longer known bases (a tool that loaded "number fr" may have loaded the tool's
    file), and flowd's next file is numbered after it."""
    if fr is None:
        return
    for number in [n for n in snap.generations if n >= fr]:
        del snap.generations[number]
    snap.file_revision = max(snap.file_revision, fr)


def merge_into(service: Service, snap: Snapshotter, data_dir: Path, theirs: dict[str, Any],
               base_flows: dict[str, Any], base_current: str | None,
               evidence: Path | None) -> dict[str, Any]:
    """Three-way merge of ``theirs`` into the live store as one journaled change."""
    store = service.store
    result = three_way_merge(base_flows, base_current, store.flows, store.current_flow_id,
                             theirs["flows"], theirs.get("current_flow_id"))
    # the loop commits before its timers run: nothing may be staged over a merge
    assert not service.pending, "stray merge while writes are staged"
    txn = store.begin()
    for op, fid, flow in result.changes:
        if flow is None:
            txn.delete(op, fid)
        else:
            txn.put(op, {**flow, "revision": txn.rev})
    if result.current_flow_id != txn.current:
        txn.current = result.current_flow_id
        if result.current_flow_id is not None:
            txn.changes.append(["set_current", result.current_flow_id, None])
    service.commit_internal(txn)
    report = {**result.report, "revision": store.revision,
              "evidence": evidence.name if evidence else None}
    if result.losers:
        data = orjson.dumps({"losers": result.losers}, option=orjson.OPT_INDENT_2)
        report["losers_file"] = write_aside(data_dir, "flows.json", "merge", data).name
    service.stats.strays.append(report)
    _forget_numbers_from(snap, _file_revision(theirs))
    _remember_stray_file(snap, theirs, store.revision)
    log.warning("stray writer merged into revision %d: %s", store.revision, report)
    snap.note_change(0.0)
    return report
