"""flowctl's daemon commands: ping, status, stats and the change feed (watch)."""

from __future__ import annotations

import time
from typing import Any

import orjson

from ..discovery import is_locked, read_lock_info
from ..errors import UnavailableError
from ..exitcodes import OK, UNAVAILABLE
from ..hints import start_hint
from ..model import Change
from .context import CliError, Ctx
from .metrics import print_prometheus
from .output import emit_json, pretty, span, when


def cmd_ping(ctx: Ctx) -> int:
    """Retry until the daemon answers or ``--wait`` runs out (0: one try).

    Starts a daemon only with an explicit ``--autostart`` (a health check should not
    start what it checks), and then only on the first try."""
    deadline = time.monotonic() + ctx.args.wait
    autostart = bool(ctx.args.autostart)
    while True:
        left = deadline - time.monotonic()
        timeout = min(ctx.args.timeout, max(left, 0.2)) if ctx.args.wait else ctx.args.timeout
        try:
            with ctx.new_client(timeout=timeout, autostart=autostart) as c:
                autostart = False
                t0 = time.monotonic()
                rev = c.ping()["revision"]
            print(f"pong: revision {rev} in {(time.monotonic() - t0) * 1000:.1f} ms")
            return 0
        except UnavailableError:
            if time.monotonic() + 0.1 >= deadline:
                raise
            time.sleep(0.1)


def status_doc(ctx: Ctx) -> dict[str, Any]:
    """The lock's facts plus the daemon's stats; ``running`` False when down."""
    d = ctx.data_dir
    info = (read_lock_info(d) or {}) if d else {}
    doc: dict[str, Any] = {"running": False, "data_dir": str(d) if d else None,
                           "endpoint": info.get("endpoint") or ctx.args.endpoint,
                           "pid": info.get("pid")}
    if d is not None and not is_locked(d):
        doc["message"] = f"flowd is not running for data dir {d}; {start_hint(d, cli=True)}"
        return doc
    with ctx.new_client(autostart=False) as c:
        try:
            stats = c.stats()
        except UnavailableError as exc:
            doc["message"] = exc.message
            return doc
    snap = stats.get("snapshot") or {}
    doc.update(running=True, uptime_seconds=stats.get("uptime_seconds"),
               version=info.get("version"), flows=stats.get("flows"),
               current_flow_id=stats.get("current_flow_id"), revision=stats.get("revision"),
               snapshot_revision=stats.get("snapshot_revision"),
               snapshot_lag_revisions=stats.get("snapshot_lag_revisions"),
               last_snapshot=snap.get("last_at"), journal=stats.get("journal"))
    return doc


def cmd_status(ctx: Ctx) -> int:
    doc = status_doc(ctx)
    if ctx.args.json:
        emit_json(doc)
        return OK if doc["running"] else UNAVAILABLE
    if not doc["running"]:
        raise CliError(doc["message"], UNAVAILABLE)
    journal = doc.get("journal") or {}
    snap_rev = doc["snapshot_revision"]
    rows = [("pid", doc["pid"]), ("uptime", span(doc["uptime_seconds"] or 0)),
            ("endpoint", doc["endpoint"]), ("data dir", doc["data_dir"]),
            ("flows", f"{doc['flows']} (current: {doc['current_flow_id']})"),
            ("revision", doc["revision"]),
            ("flows.json", "not written yet" if snap_rev is None or snap_rev < 0 else
             f"revision {snap_rev}, {doc['snapshot_lag_revisions']} behind the store"),
            ("last save", when(doc["last_snapshot"])),
            ("journal", f"{journal.get('segments')} segments, {journal.get('bytes')} bytes, "
                        f"{journal.get('durability')} durability")]
    print("flowd is running")
    for label, value in rows:
        if value is not None:
            print(f"  {label:<11} {value}")
    return 0


def cmd_stats(ctx: Ctx) -> int:
    if ctx.args.prometheus:
        return print_prometheus(ctx)
    stats = ctx.client.stats()
    if ctx.args.json:
        emit_json(stats)
    else:
        print("\n".join(pretty(stats)))
    return 0


def _change_line(c: Change, as_json: bool) -> str:
    if as_json:
        return orjson.dumps({"revision": c.revision, "op": c.op, "flow_id": c.flow_id,
                             "flow": None if c.flow is None else c.flow.to_dict(),
                             "current_flow_id": c.current_flow_id, "ts": c.ts}).decode()
    what = "(deleted)" if c.flow is None else repr(c.flow.name)
    return f"{c.revision:>8}  {c.op:<12} {c.flow_id}  {what}  current={c.current_flow_id}"


def cmd_watch(ctx: Ctx) -> int:
    """One line per change until ``--timeout`` idle seconds (default: forever)."""
    for change in ctx.client.watch(since=ctx.args.since, timeout=ctx.args.idle):
        print(_change_line(change, ctx.args.json), flush=True)
    return 0
