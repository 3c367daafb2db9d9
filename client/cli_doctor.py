"""flowctl migrate and doctor: flowd's offline tools, then the daemon's own view.

The on-disk half (converting a file, checking a data dir) runs in
``python -m flowd.offline``; the online half asks the running daemon.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from .cli_context import CliError, Ctx, run_offline
from .cli_output import emit_json, print_checks
from .discovery import is_locked
from .errors import UnavailableError
from .exitcodes import FAILED, OK
from .hints import start_hint


def cmd_migrate(ctx: Ctx) -> int:
    """Offline conversion through ``flowd.offline`` (progress bar and summary come from it)."""
    argv = ["migrate", ctx.args.src] + ([ctx.args.dst] if ctx.args.dst else [])
    return run_offline(*argv, *(["--verbose"] if ctx.args.verbose else [])).returncode


def online_checks(ctx: Ctx) -> list[dict[str, Any]]:
    """What only the running daemon can tell: does it answer, and what did it report."""
    d = ctx.data_dir
    if d is not None and not is_locked(d):
        return [{"name": "daemon", "status": "warn", "message": f"not running for {d}",
                 "hint": "the offline checks above still apply; "
                 + start_hint(d, cli=True), "details": []}]
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
    out.append(stray_check(stats))
    return out


def stray_check(stats: dict[str, Any]) -> dict[str, Any]:
    """Old tools' rewrites of flows.json whose conflicts nobody resolved yet."""
    open_ = stats.get("stray_conflicts") or []
    if not open_:
        merges = len(stats.get("stray_merges") or [])
        return {"name": "stray writers", "status": "ok", "hint": "", "details": [],
                "message": f"no unresolved conflicts ({merges} recent merges)"}
    return {"name": "stray writers", "status": "warn",
            "message": f"{len(open_)} unresolved conflict(s) from old tools rewriting "
                       "flows.json: flowd kept its own version of each",
            "hint": "compare each flow with the tool's version in its aside file "
                    "(`python -m json.tool FILE`), apply what should stay with flowctl, then "
                    "remove the file",
            "details": [f"{c.get('flow_id')}: {c.get('file')}" for c in open_]}


def cmd_doctor(ctx: Ctx) -> int:
    """Offline checks of the data dir (via flowd.offline), then the daemon's own view."""
    checks: list[dict[str, Any]] = []
    if ctx.data_dir is not None:
        proc = run_offline("doctor", str(ctx.data_dir), "--json", capture=True)
        try:
            checks = orjson.loads(proc.stdout)["checks"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise CliError("", proc.returncode or FAILED) from None  # flowd.offline said why
    checks += online_checks(ctx)
    failed = any(c["status"] == "fail" for c in checks)
    if ctx.args.json:
        emit_json({"data_dir": str(ctx.data_dir) if ctx.data_dir else None,
                   "endpoint": ctx.args.endpoint, "checks": checks, "ok": not failed})
    else:
        print_checks(checks)
    return FAILED if failed else OK
