"""Absorbing a stray writer: an old tool rewrote flows.json behind flowd's back.

Its file is kept aside, merged three ways against the last snapshot flowd
wrote (:mod:`flowd.merge`), and the merge is one journaled change with its own
revision. Losing versions of both-sides conflicts go to an aside file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import orjson

from .merge import three_way_merge
from .service import Service
from .snapshotter import Snapshotter
from .storage.evidence import keep_aside, write_aside
from .storage.loader import load_file
from .storage.migrate import CorruptFileError
from .storage.snapshot import fingerprint

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
        snap.note_change(0.0)
        return
    evidence = keep_aside(path, "stray")
    merge_into(service, snap, data_dir, got.doc, snap.base_flows, snap.base_current, evidence)
    snap.files.known = fingerprint(st)


def merge_into(service: Service, snap: Snapshotter, data_dir: Path, theirs: dict[str, Any],
               base_flows: dict[str, Any], base_current: str | None,
               evidence: Path | None) -> dict[str, Any]:
    """Three-way merge of ``theirs`` into the live store as one journaled change."""
    store = service.store
    result = three_way_merge(base_flows, base_current, store.flows, store.current_flow_id,
                             theirs["flows"], theirs.get("current_flow_id"))
    service.commit()
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
    log.warning("stray writer merged into revision %d: %s", store.revision, report)
    snap.note_change(0.0)
    return report
