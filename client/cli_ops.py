"""flowctl's plumbing (context, output) and its file commands: export, import, migrate, doctor.

Why split from ``cli.py``: these commands read or write files and run the
daemon's offline tools (``python -m flowd.offline``) as a subprocess, since
``flowd_client`` must never import the daemon package.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from .client import FlowClient
from .discovery import default_data_dir, is_locked
from .errors import ConflictError, UnavailableError
from .model import Flow
from .protocol import FLOW_CORE_KEYS as _CORE
from .protocol import MAX_BATCH_OPS

#: a batch request must stay well under the daemon's 16 MiB request limit
BATCH_BYTES = 8 << 20
DIFF_LINES = 200


class CliError(Exception):
    """A failure flowctl reports as ``flowctl: <message>`` with exit ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message, self.code = message, code


class Ctx:
    """What a command needs: the parsed args and, made on first use, one client."""

    def __init__(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
        self.args, self.parser = args, parser
        self._client: FlowClient | None = None

    @property
    def data_dir(self) -> Path | None:
        """The data dir to inspect on disk; None when only an endpoint was given."""
        if self.args.data_dir:
            return Path(self.args.data_dir).expanduser()
        return None if self.args.endpoint else default_data_dir()

    def new_client(self, timeout: float | None = None, **kw: Any) -> FlowClient:
        return FlowClient(self.args.data_dir, self.args.endpoint,
                          timeout=self.args.timeout if timeout is None else timeout, **kw)

    @property
    def client(self) -> FlowClient:
        if self._client is None:
            self._client = self.new_client()
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def emit_json(obj: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.buffer.flush()


def warn(message: str) -> None:
    print(f"flowctl: warning: {message}", file=sys.stderr)


def run_offline(*argv: str, capture: bool = False) -> subprocess.CompletedProcess[bytes]:
    """``python -m flowd.offline ...``; stderr always goes straight to ours."""
    cmd = [sys.executable, "-m", "flowd.offline", *argv]
    return subprocess.run(cmd, stdout=subprocess.PIPE if capture else None, check=False)


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


def when(epoch: float | None) -> str:
    """Local time of an epoch plus how long ago: what an operator wants to read."""
    if not epoch:
        return "never"
    ago = time.time() - epoch
    return f"{datetime.fromtimestamp(epoch).isoformat(timespec='seconds')} ({span(ago)} ago)"


def span(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f} s"
    d, rest = divmod(s, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return " ".join(f"{v}{u}" for v, u in ((d, "d"), (h, "h"), (m, "m"), (s, "s")) if v)


def pretty(d: dict[str, Any], pad: str = "") -> list[str]:
    """Nested stats as indented lines; times and durations made readable."""
    lines: list[str] = []
    for key, v in d.items():
        label = key.replace("_", " ")
        if isinstance(v, dict) and v:
            lines += [f"{pad}{label}:"] + pretty(v, pad + "  ")
        elif isinstance(v, list) and v:
            lines += [f"{pad}{label}:"] + [f"{pad}  - {orjson.dumps(x).decode()}" for x in v]
        else:
            if key in ("started", "last_at") and isinstance(v, (int, float)):
                v = when(v)
            elif key == "uptime_seconds" and isinstance(v, (int, float)):
                label, v = "uptime", span(v)
            elif v in (None, {}, []):
                v = "-"
            lines.append(f"{pad}{label:<26} {v}")
    return lines


# ------------------------------------------------------------------ export


def consistent_read(client: FlowClient) -> tuple[dict[str, Flow], str | None, int]:
    """All flows, the current id and the revision they hold, retried until no write raced."""
    for _ in range(5):
        before = client.ping()["revision"]
        flows, current = client.get_all_flows(), client.get_current_flow_id()
        after = client.ping()["revision"]
        if before == after:
            return flows, current, after
    warn("the store kept changing during the export; it may mix revisions")
    return flows, current, after


def cmd_export(ctx: Ctx) -> int:
    """The whole store as a flows.json-3.0-shaped file (``-``: stdout)."""
    flows, current, revision = consistent_read(ctx.client)
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


def read_import(path: str) -> dict[str, Any]:
    """The file as a 3.0 document; legacy shapes go through ``flowd.offline normalize``."""
    raw = Path(path).read_bytes()
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        doc = None
    if _clean_v3(doc):
        return doc
    proc = run_offline("normalize", path, capture=True)
    if proc.returncode:
        raise CliError(f"cannot import {path} (see above)", proc.returncode)
    return orjson.loads(proc.stdout)


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


def chunk(groups: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """At most MAX_BATCH_OPS ops and about BATCH_BYTES per batch; groups never split."""
    batches: list[list[dict[str, Any]]] = [[]]
    size = 0
    for group in groups:
        n = len(orjson.dumps(group))
        if batches[-1] and (len(batches[-1]) + len(group) > MAX_BATCH_OPS - 1
                            or size + n > BATCH_BYTES):
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
    batches = chunk(op_groups(d))
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
    doc = read_import(args.file)
    ours, ours_current, _ = consistent_read(client)
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


# ------------------------------------------------------------------ migrate, doctor


def cmd_migrate(ctx: Ctx) -> int:
    """Offline conversion through ``flowd.offline`` (progress bar and summary come from it)."""
    argv = ["migrate", ctx.args.src] + ([ctx.args.dst] if ctx.args.dst else [])
    return run_offline(*argv, *(["--verbose"] if ctx.args.verbose else [])).returncode


def online_checks(ctx: Ctx) -> list[dict[str, Any]]:
    """What only the running daemon can tell: does it answer, and what did it report."""
    d = ctx.data_dir
    if d is not None and not is_locked(d):
        return [{"name": "daemon", "status": "warn", "message": f"not running for {d}",
                 "hint": "the offline checks above still apply; start it with "
                 f"`flowd --data-dir {d}`", "details": []}]
    try:
        with ctx.new_client(autostart=False) as c:
            t0 = time.monotonic()
            stats = c.stats()
    except UnavailableError as exc:
        return [{"name": "daemon", "status": "fail", "message": exc.message,
                 "hint": "it holds the data dir but does not answer: see its log, restart it",
                 "details": []}]
    ms = (time.monotonic() - t0) * 1000
    out = [{"name": "daemon", "status": "ok", "details": [], "hint": "",
            "message": f"answers in {ms:.1f} ms at revision {stats.get('revision')}"}]
    load, snap = stats.get("load") or {}, stats.get("snapshot") or {}
    problems = list(load.get("corrupt") or [])
    if stats.get("journal_failures"):
        problems.append(f"journal writes failed {stats['journal_failures']} times "
                        f"(last: {stats.get('last_journal_error')})")
    if snap.get("last_error"):
        problems.append(f"last snapshot failed: {snap['last_error']}")
    status = "warn" if problems else "ok"
    msg = "; ".join(problems) or (f"flows.json {stats.get('snapshot_lag_revisions')} "
                                  "revisions behind the store")
    out.append({"name": "health", "status": status, "message": msg, "details": [],
                "hint": "check disk space and the daemon's log" if problems else ""})
    return out


def print_checks(checks: list[dict[str, Any]]) -> None:
    for c in checks:
        label = "FAIL" if c["status"] == "fail" else c["status"]
        print(f"{label:<5} {c['name']:<11} {c['message']}")
        for line in c.get("details", [])[:20]:
            print(f"{'':18}{line}")
        if c.get("hint") and c["status"] != "ok":
            print(f"{'':18}-> {c['hint']}")


def cmd_doctor(ctx: Ctx) -> int:
    """Offline checks of the data dir (via flowd.offline), then the daemon's own view."""
    checks: list[dict[str, Any]] = []
    if ctx.data_dir is not None:
        proc = run_offline("doctor", str(ctx.data_dir), "--json", capture=True)
        try:
            checks = orjson.loads(proc.stdout)["checks"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise CliError("the offline checks failed (see above)", 1) from None
    checks += online_checks(ctx)
    failed = any(c["status"] == "fail" for c in checks)
    if ctx.args.json:
        emit_json({"data_dir": str(ctx.data_dir) if ctx.data_dir else None,
                   "endpoint": ctx.args.endpoint, "checks": checks, "ok": not failed})
    else:
        print_checks(checks)
    return 1 if failed else 0
