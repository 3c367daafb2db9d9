"""Read-only checks of a data dir: ``python -m flowd.offline doctor DIR [--json]``.

Each check looks at one part of the dir (lock, flows.json, journal, kept-aside
evidence, sockets) and says what is wrong and what to do; nothing here writes
or moves a file. This module returns data (:func:`report`); ``python -m
flowd.offline doctor`` writes it as JSON and ``flowctl doctor`` prints it (the
daemon never imports the CLI's printer).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flowd_client.discovery import LOCK_NAME, is_locked, read_lock_info

from .doctor_check import Check
from .doctor_safety import check_dir, check_disk, check_files, check_sockets
from .offline_load import OfflineError, load_flows
from .storage import journal as journal_mod
from .storage.evidence import list_evidence
from .storage.frames import parse_segment
from .storage.lock import describe_holder
from .storage.ownfiles import read_own
from .storage.snapshot import SNAPSHOT, WRITTEN


def check_lock(d: Path) -> Check:
    info = read_lock_info(d) or {}
    if is_locked(d):
        if not (d / LOCK_NAME).exists():
            return Check("lock", "warn", "the data dir is locked but flowd.lock is missing",
                         "the daemon puts it back within a second; if it stays missing, the "
                         "holder is not a flowd of this version: find it with "
                         f"`fuser {d}` and stop it")
        if not info:
            return Check("lock", "warn", "flowd.lock is held but names no endpoint yet",
                         "a daemon is starting; retry in a moment (`flowctl ping --wait 5`)")
        return Check("lock", "ok", f"held by {describe_holder(info)}")
    if info.get("pid"):
        return Check("lock", "warn", f"not held, but it still names pid {info['pid']}: "
                     "the last daemon did not exit cleanly",
                     "nothing is running here; starting flowd is safe (it recovers)")
    if not (d / LOCK_NAME).exists():
        return Check("lock", "ok", "no flowd.lock: no daemon has run here yet")
    return Check("lock", "ok", "not held: no daemon is running")


def check_snapshot(d: Path) -> Check:
    path = d / SNAPSHOT
    if not path.exists():
        return Check("flows.json", "ok", "absent: the store is empty or never saved")
    try:
        got = load_flows(path, progress=False, owner=d.stat().st_uid)
    except (OfflineError, OSError) as exc:
        return Check("flows.json", "fail", str(exc),
                     "on start flowd keeps the bytes aside as flows.json.corrupt-<time> and "
                     "rebuilds from .flows.json.written or flows.json.prev plus the journal; "
                     "restore from a backup if those are gone")
    meta = got.doc.get("meta") or {}
    summary = (f"{len(got.doc['flows'])} flows, revision {meta.get('revision')}, "
               f"file_revision {meta.get('file_revision')}")
    if got.source_version != "3.0":
        return Check("flows.json", "warn",
                     f"schema {got.source_version or 'none'}, not 3.0 ({summary})",
                     "flowd migrates it on start (original kept as a backup), or run "
                     "`flowctl migrate` now", got.notes)
    written = d / WRITTEN
    if written.exists() and not _same_file(written, path):
        return Check("flows.json", "warn", f"schema 3.0 ({summary}) but rewritten by another "
                     "program since flowd last wrote it",
                     "flowd merges it three ways on start; stop old tools that write it")
    if got.notes:
        return Check("flows.json", "warn", f"schema 3.0 ({summary}) with repairs needed",
                     "flowd repairs these on load; see the details", got.notes)
    return Check("flows.json", "ok", f"schema 3.0, {summary}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def scan_segment(path: Path) -> tuple[int, int, int, str | None]:
    """(records, bytes they take, torn tail bytes, corruption) of one segment; reads,
    never moves anything. The bytes are the daemon's count too (``stats`` journal
    bytes): the zeroed space a segment reserves ahead of its writes is not in them."""
    data = read_own(path, owner=path.parent.stat().st_uid)  # a FIFO must not hang doctor
    got = parse_segment(data)
    if got.tail == "corrupt":
        where = "unreadable header" if got.head is None else (
            f"bad record at byte {got.end} of {len(data)}")
        return len(got.records), got.end, 0, where
    torn = len(data.rstrip(b"\0")) - got.end if got.tail == "torn" else 0
    return len(got.records), got.end, torn, None


def check_journal(d: Path) -> Check:
    segs = sorted(p for p in d.iterdir() if journal_mod.is_segment_name(p.name))
    if not segs:
        return Check("journal", "ok", "no segments: everything is in flows.json")
    total, torn, bad, used, disk = 0, [], [], 0, 0
    for p in segs:
        records, nbytes, torn_bytes, corrupt = scan_segment(p)
        total, used, disk = total + records, used + nbytes, disk + p.lstat().st_size
        if corrupt:
            bad.append(f"{p.name}: {corrupt}")
        elif torn_bytes:
            torn.append(f"{p.name}: torn tail of {torn_bytes} bytes")
    ahead = f" ({disk} on disk with the space reserved ahead)" if disk != used else ""
    msg = f"{len(segs)} segments, {total} records, {used} bytes{ahead}"
    if bad:
        return Check("journal", "fail", f"{msg}; corrupt: {'; '.join(bad)}",
                     "flowd replays the records before the damage and keeps that segment and "
                     "later ones aside (journal-*.corrupt-*); changes after it may be lost: "
                     "compare with a backup", bad + torn)
    if torn:
        return Check("journal", "warn", f"{msg}; {len(torn)} torn tail(s)",
                     "a write was cut off before it was acknowledged; flowd drops it on "
                     "start, nothing to do", torn)
    return Check("journal", "ok", msg)


def check_evidence(d: Path) -> Check:
    files = list_evidence(d)
    if not files:
        return Check("evidence", "ok", "no files kept aside")
    details = [f"{p.name}  {p.lstat().st_size} bytes" for p in files]
    return Check("evidence", "warn", f"{len(files)} file(s) kept aside "
                 f"({sum(p.lstat().st_size for p in files)} bytes)",
                 "flowd never deletes these; inspect them (`less FILE`, "
                 "`python -m json.tool FILE`, `diff FILE flows.json`), merge by hand if "
                 "needed, then remove them yourself", details)


CHECKS: list[Callable[[Path], Check]] = [check_files, check_lock, check_snapshot,
                                         check_journal, check_evidence, check_sockets,
                                         check_disk]


def doctor_checks(d: Path) -> list[Check]:
    """Every check in order; a missing dir stops after the first."""
    first = check_dir(d)
    if first.status == "fail":
        return [first]
    out = [first]
    for check in CHECKS:
        try:
            out.append(check(d))
        except OSError as exc:
            out.append(Check(check.__name__.removeprefix("check_"), "fail", str(exc),
                             "check the permissions of the data dir"))
    return out


def report(d: Path) -> dict[str, Any]:
    """Every check as JSON-able data: the document ``flowctl doctor`` reads."""
    checks = [asdict(c) for c in doctor_checks(d)]
    return {"data_dir": str(d), "checks": checks,
            "ok": not any(c["status"] == "fail" for c in checks)}
