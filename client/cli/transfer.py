"""flowctl export and import: the store to a 3.0 file and back, in atomic batches.

Legacy files are normalized by ``python -m flowd.offline normalize`` (the
daemon's own loader) before they are compared with the store.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from ..client import FlowClient
from ..errors import ConflictError
from ..flowids import Deriver, candidate, content_bytes
from ..model import Flow
from ..protocol import FLOW_CORE_KEYS as _CORE
from ..protocol import MAX_BATCH_OPS
from ..request_core import limit_of
from .context import CliError, Ctx, run_offline
from .output import warn

#: a batch's ops take at most this share of the daemon's request limit (the rest: framing)
BATCH_SHARE = 2
DIFF_LINES = 200


def atomic_write(path: Path, data: bytes) -> None:
    """Temp file in the same dir, fsync, rename, fsync the dir: old file or new, never half."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(dfd)
    os.close(dfd)


# ------------------------------------------------------------------ export


def cmd_export(ctx: Ctx) -> int:
    """The whole store as a flows.json-3.0-shaped file (``-``: stdout)."""
    # one paged read: its pages, current id and revision all come from one revision
    flows, current, revision = ctx.client.read_store()
    doc = {"version": "3.0",
           "meta": {"last_saved": datetime.now().isoformat(timespec="milliseconds"),
                    "file_revision": 0, "revision": revision, "exported_by": "flowctl"},
           "current_flow_id": current,
           "flows": {fid: f.to_dict() for fid, f in flows.items()}}
    data = orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"
    if ctx.args.file == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return 0
    atomic_write(Path(ctx.args.file), data)
    print(f"exported {len(flows)} flows at revision {revision} to {ctx.args.file}")
    return 0


# ------------------------------------------------------------------ import


def _clean_v3(doc: Any) -> bool:
    """A 3.0 document whose flows need no repair (else flowd.offline normalizes it)."""
    if type(doc) is not dict or doc.get("version") != "3.0" or type(doc.get("flows")) is not dict:
        return False
    return all(type(f) is dict and f.get("id", k) == k and type(f.get("name")) is str
               and type(f.get("plans")) is list and all(type(p) is dict for p in f["plans"])
               for k, f in doc["flows"].items())


def read_import(path: str) -> tuple[dict[str, Any], set[str]]:
    """The file as a 3.0 document, and the ids the loader derived (flows that had none).

    Legacy shapes go through ``flowd.offline normalize`` (the daemon's loader).
    """
    raw = Path(path).read_bytes()
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        doc = None
    if _clean_v3(doc):
        return doc, set()
    proc = run_offline("normalize", path, capture=True)
    if proc.returncode:
        raise CliError("", proc.returncode)  # flowd.offline said why, in one flowctl: line
    doc = orjson.loads(proc.stdout)
    return doc, derived_ids(doc["flows"])


#: how far past the expected candidate a derived id may sit (the loader skips ids in use)
LOOKAHEAD = 4


def derived_ids(flows: dict[str, dict[str, Any]]) -> set[str]:
    """Ids that are their flow's own content id, as the loader hands them out in file
    order (equal contents take successive candidates): the flows that had no id.

    A real id equal to its own content hash has odds of 2**-32; exports are clean 3.0
    files and never come here, so their ids are always taken as they are.
    """
    out: set[str] = set()
    nexts: dict[bytes, int] = {}
    for fid, f in flows.items():
        digest = hashlib.sha256(content_bytes(f))
        start = nexts.get(digest.digest(), 0)
        for j in range(start, start + LOOKAHEAD):
            if candidate(digest, j) == fid:
                out.add(fid)
                nexts[digest.digest()] = j + 1
                break
    return out


def place_derived(doc: dict[str, Any], derived: set[str], ours: dict[str, Flow]) -> None:
    """Give each derived-id flow the first of its candidates that is free in the store or
    holds this very content (then the import finds it unchanged). A different flow under
    the id (edited since the last import, or a hash collision) is never overwritten: the
    file's flow moves on to its next candidate. So importing a file twice changes nothing,
    and a dry run shows the same ids every time."""
    if not derived:
        return
    claimed = {fid for fid in doc["flows"] if fid not in derived}
    deriver, placed, renamed = Deriver(), {}, {}

    def usable(f: dict[str, Any], fid: str) -> bool:
        return fid not in claimed and (fid not in ours or not _changed(f, ours[fid]))

    for fid, f in doc["flows"].items():
        if fid in derived:
            new = deriver.derive(f, functools.partial(usable, f))
            claimed.add(new)
            renamed[fid], f = new, {**f, "id": new}
            fid = new
        placed[fid] = f
    doc["flows"] = placed
    doc["current_flow_id"] = renamed.get(doc.get("current_flow_id"),
                                         doc.get("current_flow_id"))


@dataclass
class Diff:
    """What an import would do to the store."""

    adds: list[dict[str, Any]] = field(default_factory=list)
    changes: list[tuple[dict[str, Any], Flow]] = field(default_factory=list)
    deletes: list[Flow] = field(default_factory=list)
    same: int = 0


def _extra(f: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in f.items() if k not in _CORE}


def _changed(f: dict[str, Any], have: Flow) -> list[str]:
    pairs = (("name", have.name, f.get("name", "")), ("plans", have.plans, f.get("plans", [])))
    what = [k for k, a, b in pairs if a != b]
    if any(have.extra.get(k) != v for k, v in _extra(f).items()):
        what.append("extra keys")
    return what


def diff_flows(theirs: dict[str, dict[str, Any]], ours: dict[str, Flow],
               replace: bool) -> Diff:
    out = Diff()
    for fid, f in theirs.items():
        have = ours.get(fid)
        if have is None:
            out.adds.append(f)
        elif _changed(f, have):
            out.changes.append((f, have))
        else:
            out.same += 1
    if replace:
        out.deletes = [f for fid, f in ours.items() if fid not in theirs]
    return out


def diff_lines(d: Diff) -> list[str]:
    lines = [f"+ {f.get('id', '?')}  {f.get('name', '')!r}  ({len(f.get('plans', []))} plans)"
             for f in d.adds]
    for f, have in d.changes:
        lines.append(f"~ {have.id}  {f.get('name', '')!r}  ({', '.join(_changed(f, have))} "
                     "changed)")
    lines += [f"- {f.id}  {f.name!r}" for f in d.deletes]
    if len(lines) > DIFF_LINES:
        lines = lines[:DIFF_LINES] + [f"... and {len(lines) - DIFF_LINES} more"]
    return lines


def op_groups(d: Diff) -> list[list[dict[str, Any]]]:
    """Ops that must share a batch: each change travels with its precondition.

    Adds keep the file's ids (add_flow refuses an id that appeared meanwhile).
    """
    groups = [[{"op": "add_flow", "args": {"name": f.get("name", ""), "flow_id": f["id"],
                                           "plans": f.get("plans", []),
                                           "extra": _extra(f)}}] for f in d.adds]
    for f, have in d.changes:
        groups.append([{"op": "check", "args": {"flow_id": have.id, "revision": have.revision}},
                       {"op": "update_flow", "args": {"flow_id": have.id,
                                                      "name": f.get("name", ""),
                                                      "plans": f.get("plans", []),
                                                      "extra": _extra(f)}}])
    for have in d.deletes:
        groups.append([{"op": "check", "args": {"flow_id": have.id, "revision": have.revision}},
                       {"op": "delete_flow", "args": {"flow_id": have.id}}])
    return groups


def chunk(groups: list[list[dict[str, Any]]], max_bytes: int) -> list[list[dict[str, Any]]]:
    """At most MAX_BATCH_OPS ops and about ``max_bytes`` per batch; groups never split."""
    batches: list[list[dict[str, Any]]] = [[]]
    size = 0
    for group in groups:
        n = len(orjson.dumps(group))
        if batches[-1] and (len(batches[-1]) + len(group) > MAX_BATCH_OPS - 1
                            or size + n > max_bytes):
            batches.append([])
            size = 0
        batches[-1].extend(group)
        size += n
    return batches


def _target_current(doc: dict[str, Any], ours: dict[str, Flow], ours_current: str | None,
                    d: Diff, replace: bool) -> str | None:
    """The current flow after the import: the file's with --replace, else ours if it stays."""
    deleted = {f.id for f in d.deletes}
    if not replace and ours_current in ours and ours_current not in deleted:
        return ours_current
    return doc.get("current_flow_id")


def apply_import(client: FlowClient, d: Diff, target: str | None) -> None:
    """Commit the batches; the current flow is set in the last one."""
    batches = chunk(op_groups(d), limit_of(client.hello()) // BATCH_SHARE)
    if target is not None:
        batches[-1].append({"op": "set_current", "args": {"flow_id": target}})
    if len(batches) > 1:
        warn(f"the import needs {len(batches)} batches of at most {MAX_BATCH_OPS} operations: "
             "each batch is atomic, the import as a whole is not")
    for n, ops in enumerate(batches):
        try:
            client.commit_batch(ops)
        except ConflictError as exc:
            done = f" ({n} of {len(batches)} batches were applied)" if n else ""
            raise CliError(f"import aborted, the store changed meanwhile: {exc.message}{done}; "
                           "nothing of this batch was applied; run the import again") from None


def cmd_import(ctx: Ctx) -> int:
    """Merge a file into the store (``--replace``: also delete what the file lacks)."""
    args, client = ctx.args, ctx.client
    doc, derived = read_import(args.file)
    ours, ours_current, _ = client.read_store()
    place_derived(doc, derived, ours)
    d = diff_flows(doc["flows"], ours, args.replace)
    summary = (f"{len(d.adds)} to add, {len(d.changes)} to change, {len(d.deletes)} to delete, "
               f"{d.same} unchanged")
    if args.dry_run:
        print("\n".join(diff_lines(d) + [f"dry run: {summary}; nothing changed"]))
        return 0
    if not (d.adds or d.changes or d.deletes):
        print(f"nothing to import: the store already holds what {args.file} holds")
        return 0
    target = _target_current(doc, ours, ours_current, d, args.replace)
    apply_import(client, d, target)
    print("\n".join(diff_lines(d) + [f"imported: {summary.replace(' to ', ' ')}"]))
    return 0

