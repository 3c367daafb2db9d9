"""flowctl migrate and doctor: flowd's offline tools, then the daemon's own view.

The on-disk half (converting a file, checking a data dir) runs in
``python -m flowd.offline``; the online half asks the running daemon.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson

from ..discovery import is_locked
from ..errors import UnavailableError, UntrustedError
from ..exitcodes import FAILED, OK
from ..hints import start_hint
from .context import CliError, Ctx, run_offline
from .output import emit_json, print_checks


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
    except UntrustedError as exc:
        return [{"name": "daemon", "status": "fail", "message": exc.message, "details": [],
                 "hint": "nothing was sent to it; see the data dir and files checks above"}]
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
    return out + limit_checks(d, stats)


def _check(name: str, problems: list[tuple[str, str]], ok: str) -> dict[str, Any]:
    """A fail if any problem says "fail", a warn if any other, else ok."""
    if not problems:
        return {"name": name, "status": "ok", "message": ok, "hint": "", "details": []}
    status = "fail" if any(level == "fail" for level, _ in problems) else "warn"
    return {"name": name, "status": status, "details": [],
            "message": "; ".join(text for _, text in problems), "hint": LIMIT_HINTS[name]}


LIMIT_HINTS = {
    "identity": "two data dirs are configured with the same endpoint: give each daemon its "
                "own (--endpoint), then restart the one serving the wrong dir",
    "connections": "raise the open-file limit (LimitNOFILE= in the unit, ulimit -n) or find "
                   "the client that opens connections without closing them",
    "memory": "a client or watcher does not read what it asked for; it retries or resyncs. "
              "The bounds are settings (flowd --help: *_bytes); README, Limits",
}


def limit_checks(d: Any, stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Who answered, file descriptors, and the memory bounds (README, Limits)."""
    lim = stats.get("limits") or {}
    served = stats.get("data_dir")
    ident = [] if d is None or served is None or os.path.realpath(served) == os.path.realpath(
        d) else [("fail", f"the daemon answering for {d} serves data dir {served}")]
    fds = lim.get("fds") or {}
    conn: list[tuple[str, str]] = []
    if fds and not fds.get("accepting", True):
        conn.append(("fail", f"not accepting new connections: {fds['open']} of "
                             f"{fds['limit']} file descriptors open"))
    elif fds and fds["open"] > 0.8 * fds["pause_at"]:
        conn.append(("warn", f"{fds['open']} of {fds['limit']} file descriptors open"))
    if lim.get("sockets_rebound"):
        conn.append(("warn", f"socket files were removed or replaced and bound again "
                             f"{lim['sockets_rebound']} times"))
    mem: list[tuple[str, str]] = []
    if lim.get("replies_dropped"):
        mem.append(("warn", f"{lim['replies_dropped']} replies dropped for clients over "
                            f"their queue bound ({lim['peer_queue_bytes'] >> 20} MiB)"))
    if lim.get("writes_refused"):
        mem.append(("warn", f"{lim['writes_refused']} writes refused (disk)"))
    h, k = lim.get("history") or {}, lim.get("retry_keys") or {}
    held = (f"history {h.get('bytes', 0) >> 20}/{h.get('max_bytes', 0) >> 20} MiB, retry keys "
            f"{k.get('bytes', 0) >> 20}/{k.get('max_bytes', 0) >> 20} MiB")
    return [_check("identity", ident, f"serves {served}"),
            _check("connections", conn, f"{fds.get('open', '?')} of {fds.get('limit', '?')} "
                   "file descriptors open"),
            _check("memory", mem, held)]


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
