"""``flowctl``: the command line over :class:`FlowClient` (and flowd's offline tools).

Human output by default, ``--json`` on every read command. Failures print one
line, ``flowctl: <message>``, never a traceback. Exit codes: 0 ok, 1 failure
or not found, 2 usage. Offline work (migrate, the on-disk half of doctor,
normalizing legacy files for import) runs ``python -m flowd.offline`` as a
subprocess, because this package never imports the daemon.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

from . import cli_ops
from .cli_ops import CliError, Ctx, emit_json
from .discovery import is_locked, read_lock_info
from .errors import FlowdError, UnavailableError
from .model import Change, Flow

Handler = Callable[[Ctx], int]


# ------------------------------------------------------------------ reads


def cmd_ping(ctx: Ctx) -> int:
    """Retry until the daemon answers or ``--wait`` runs out (0: one try)."""
    deadline = time.monotonic() + ctx.args.wait
    while True:
        left = deadline - time.monotonic()
        timeout = min(ctx.args.timeout, max(left, 0.2)) if ctx.args.wait else ctx.args.timeout
        try:
            with ctx.new_client(timeout=timeout, autostart=False) as c:
                t0 = time.monotonic()
                rev = c.ping()["revision"]
            print(f"pong: revision {rev} in {(time.monotonic() - t0) * 1000:.1f} ms")
            return 0
        except UnavailableError:
            if time.monotonic() + 0.1 >= deadline:
                raise
            time.sleep(0.1)


def _flow_json(f: Flow, current: str | None) -> dict[str, Any]:
    return {**f.to_dict(), "current": f.id == current}


def cmd_ls(ctx: Ctx) -> int:
    flows, current = ctx.client.get_all_flows(), ctx.client.get_current_flow_id()
    if ctx.args.json:
        emit_json({"current_flow_id": current,
                   "flows": [_flow_json(f, current) for f in flows.values()]})
        return 0
    if not flows:
        print("no flows")
    for f in flows.values():
        print(f"{'*' if f.id == current else ' '} {f.id:<16} {len(f.plans):>5} plans  {f.name}")
    return 0


def _print_flow(f: Flow, current: str | None) -> None:
    mark = " (current)" if f.id == current else ""
    for label, value in (("id", f.id + mark), ("name", f.name), ("revision", f.revision),
                         ("created", f.created), ("updated", f.updated),
                         ("plans", len(f.plans))):
        print(f"{label:<9} {value}")
    for i, plan in enumerate(f.plans):
        print(f"  [{i}] {orjson.dumps(plan).decode()}")
    for key, value in f.extra.items():
        print(f"{key:<9} {orjson.dumps(value).decode()}")


def cmd_show(ctx: Ctx) -> int:
    f = ctx.client.get_flow_by_id(ctx.args.id)
    if f is None:
        raise CliError(f"no flow {ctx.args.id!r}")
    current = ctx.client.get_current_flow_id()
    if ctx.args.json:
        emit_json(_flow_json(f, current))
    else:
        _print_flow(f, current)
    return 0


def cmd_current(ctx: Ctx) -> int:
    f = ctx.client.get_current()
    if ctx.args.json:
        emit_json(None if f is None else f.to_dict())
    elif f is not None:
        print(f"{f.id}  {f.name}")
    if f is None:
        raise CliError("no current flow")
    return 0


# ------------------------------------------------------------------ writes


def cmd_add(ctx: Ctx) -> int:
    plans = None
    if ctx.args.plans is not None:
        try:
            plans = orjson.loads(ctx.args.plans)
        except orjson.JSONDecodeError as exc:
            raise CliError(f"--plans is not valid JSON: {exc}", 2) from None
        if not isinstance(plans, list):
            raise CliError("--plans must be a JSON list of objects", 2)
    print(ctx.client.add_flow(ctx.args.name, plans))
    return 0


def cmd_rm(ctx: Ctx) -> int:
    if not ctx.client.delete_flow(ctx.args.id):
        raise CliError(f"no flow {ctx.args.id!r}")
    print(f"deleted {ctx.args.id}")
    return 0


def cmd_use(ctx: Ctx) -> int:
    if not ctx.client.set_current(ctx.args.id):
        raise CliError(f"no flow {ctx.args.id!r}; the current flow is unchanged")
    print(f"current flow: {ctx.args.id}")
    return 0


def cmd_rename(ctx: Ctx) -> int:
    f = ctx.client.update_flow(ctx.args.id, name=ctx.args.name)
    print(f"renamed {f.id} to {f.name!r} (revision {f.revision})")
    return 0


def cmd_save(ctx: Ctx) -> int:
    if not ctx.client.save(force=True):
        raise CliError("the daemon could not write flows.json (see its log); "
                       "every acknowledged write is still in the journal")
    print(f"flows.json written at revision {ctx.client.ping()['revision']}")
    return 0


# ------------------------------------------------------------------ daemon


def _when(epoch: float | None) -> str:
    if not epoch:
        return "never"
    ago = time.time() - epoch
    return f"{datetime.fromtimestamp(epoch).isoformat(timespec='seconds')} ({_span(ago)} ago)"


def _span(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f} s"
    d, rest = divmod(s, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return " ".join(f"{v}{u}" for v, u in ((d, "d"), (h, "h"), (m, "m"), (s, "s")) if v)


def status_doc(ctx: Ctx) -> dict[str, Any]:
    """The lock's facts plus the daemon's stats; ``running`` False when down."""
    d = ctx.data_dir
    info = (read_lock_info(d) or {}) if d else {}
    doc: dict[str, Any] = {"running": False, "data_dir": str(d) if d else None,
                           "endpoint": info.get("endpoint") or ctx.args.endpoint,
                           "pid": info.get("pid")}
    if d is not None and not is_locked(d):
        doc["message"] = f"flowd is not running for data dir {d}"
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
        return 0 if doc["running"] else 1
    if not doc["running"]:
        raise CliError(doc["message"])
    journal = doc.get("journal") or {}
    snap_rev = doc["snapshot_revision"]
    rows = [("pid", doc["pid"]), ("uptime", _span(doc["uptime_seconds"] or 0)),
            ("endpoint", doc["endpoint"]), ("data dir", doc["data_dir"]),
            ("flows", f"{doc['flows']} (current: {doc['current_flow_id']})"),
            ("revision", doc["revision"]),
            ("flows.json", "not written yet" if snap_rev is None or snap_rev < 0 else
             f"revision {snap_rev}, {doc['snapshot_lag_revisions']} behind the store"),
            ("last save", _when(doc["last_snapshot"])),
            ("journal", f"{journal.get('segments')} segments, {journal.get('bytes')} bytes, "
                        f"{journal.get('durability')} durability")]
    print("flowd is running")
    for label, value in rows:
        if value is not None:
            print(f"  {label:<11} {value}")
    return 0


def _pretty(d: dict[str, Any], pad: str = "") -> list[str]:
    """Nested stats as indented lines; times and durations made readable."""
    lines: list[str] = []
    for key, v in d.items():
        label = key.replace("_", " ")
        if isinstance(v, dict) and v:
            lines += [f"{pad}{label}:"] + _pretty(v, pad + "  ")
        elif isinstance(v, list) and v:
            lines += [f"{pad}{label}:"] + [f"{pad}  - {orjson.dumps(x).decode()}" for x in v]
        else:
            if key in ("started", "last_at") and isinstance(v, (int, float)):
                v = _when(v)
            elif key == "uptime_seconds" and isinstance(v, (int, float)):
                label, v = "uptime", _span(v)
            elif v in (None, {}, []):
                v = "-"
            lines.append(f"{pad}{label:<26} {v}")
    return lines


def cmd_stats(ctx: Ctx) -> int:
    stats = ctx.client.stats()
    if ctx.args.json:
        emit_json(stats)
    else:
        print("\n".join(_pretty(stats)))
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


# ------------------------------------------------------------------ completion


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(p: argparse.ArgumentParser) -> list[str]:
    return [o for a in p._actions for o in a.option_strings]


def _valued(p: argparse.ArgumentParser) -> list[str]:
    return [o for a in p._actions if a.option_strings and a.nargs != 0 for o in a.option_strings]


def _words(p: argparse.ArgumentParser) -> str:
    choices = [c for a in p._actions if not a.option_strings and a.choices for c in a.choices]
    return " ".join(_options(p) + choices)


def bash_completion(parser: argparse.ArgumentParser) -> str:
    cmds = _commands(parser)
    valued = sorted({o for p in [parser, *cmds.values()] for o in _valued(p)})
    cases = "\n".join(f"        {n}) words=\"{_words(p)}\" ;;" for n, p in cmds.items())
    return f"""# bash completion for flowctl (from `flowctl completion bash`)
_flowctl() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local cmd="" words i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            {"|".join(_valued(parser))}) ((i++)) ;;
            -*) ;;
            *) cmd="${{COMP_WORDS[i]}}"; break ;;
        esac
    done
    case "$prev" in
        --data-dir) COMPREPLY=($(compgen -d -- "$cur")); return ;;
        {"|".join(valued)}) return ;;
    esac
    case "$cmd" in
        "") words="{" ".join(_options(parser) + list(cmds))}" ;;
{cases}
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
    case "$cmd" in export|import|migrate) COMPREPLY+=($(compgen -f -- "$cur")) ;; esac
}}
complete -F _flowctl flowctl
"""


def _zsh_spec(a: argparse.Action) -> str:
    text = (a.help or "").replace("[", "(").replace("]", ")").replace("'", "")
    if not a.option_strings:
        what = f"({' '.join(a.choices)})" if a.choices else (
            "_files" if a.dest in ("file", "src", "dst") else " ")
        return f"':{a.dest}:{what}'"
    value = f":{a.dest}:" + ("_files -/" if a.dest == "data_dir" else "") if a.nargs != 0 else ""
    return " ".join(f"'{o}[{text}]{value}'" for o in a.option_strings)


def zsh_completion(parser: argparse.ArgumentParser) -> str:
    cmds = _commands(parser)
    helps = {a.dest: a.help for a in next(
        a for a in parser._actions if isinstance(a, argparse._SubParsersAction))._choices_actions}
    described = "\n".join(f"    '{n}:{(helps.get(n) or '').replace(chr(39), '')}'" for n in cmds)
    glob = " ".join(_zsh_spec(a) for a in parser._actions
                    if a.option_strings and a.dest != "help")
    cases = "\n".join(f"        {n}) _arguments {' '.join(_zsh_spec(a) for a in p._actions)} ;;"
                      for n, p in cmds.items())
    return f"""#compdef flowctl
# zsh completion for flowctl (from `flowctl completion zsh`)
_flowctl() {{
  local -a cmds
  cmds=(
{described}
  )
  local state
  _arguments -C {glob} '1:command:->cmd' '*::arg:->args' && return
  case $state in
    cmd) _describe 'command' cmds ;;
    args)
      case $words[1] in
{cases}
      esac ;;
  esac
}}
compdef _flowctl flowctl
"""


def cmd_completion(ctx: Ctx) -> int:
    make = bash_completion if ctx.args.shell == "bash" else zsh_completion
    sys.stdout.write(make(ctx.parser))
    return 0


# ------------------------------------------------------------------ parser, main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flowctl", description="talk to flowd, the flows daemon")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--data-dir", help="the daemon's data dir (default: FLOWD_DATA_DIR or "
                       "~/.local/state/flowd)")
    where.add_argument("--endpoint", help="connect here instead (e.g. ipc:///path/flowd.sock)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="CMD")

    def add(name: str, fn: Handler, text: str, json: bool = False) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=text, description=text)
        sp.set_defaults(func=fn)
        if json:
            sp.add_argument("--json", action="store_true", help="JSON output")
        return sp

    add("ping", cmd_ping, "check that the daemon answers").add_argument(
        "--wait", type=float, default=0.0, help="keep trying this many seconds")
    add("status", cmd_status, "is the daemon up; revisions and snapshot lag", json=True)
    add("ls", cmd_ls, "list flows (* marks the current one)", json=True)
    add("show", cmd_show, "show one flow", json=True).add_argument("id")
    sp = add("add", cmd_add, "add a flow (it becomes current); prints its id")
    sp.add_argument("name")
    sp.add_argument("--plans", help="a JSON list of plan objects")
    add("rm", cmd_rm, "delete a flow").add_argument("id")
    add("use", cmd_use, "make a flow the current one").add_argument("id")
    add("current", cmd_current, "show the current flow", json=True)
    sp = add("rename", cmd_rename, "rename a flow")
    sp.add_argument("id")
    sp.add_argument("name")
    add("save", cmd_save, "write flows.json now")
    add("stats", cmd_stats, "the daemon's counters", json=True)
    sp = add("watch", cmd_watch, "print changes as they happen", json=True)
    sp.add_argument("--since", type=int, help="start after this revision (default: now)")
    sp.add_argument("--timeout", dest="idle", type=float, help="stop after this many idle s")
    add("export", cli_ops.cmd_export, "write the store to a 3.0 JSON file").add_argument(
        "file", help="target file, or - for stdout")
    sp = add("import", cli_ops.cmd_import, "merge a flows file of any version into the store")
    sp.add_argument("file")
    sp.add_argument("--replace", action="store_true", help="also delete flows not in the file")
    sp.add_argument("--dry-run", action="store_true", help="print the diff, change nothing")
    sp = add("migrate", cli_ops.cmd_migrate, "convert a legacy flows file to 3.0, offline")
    sp.add_argument("src")
    sp.add_argument("dst", nargs="?", help="default: SRC in place, original kept as a backup")
    sp.add_argument("-v", "--verbose", action="store_true", help="list every change")
    add("doctor", cli_ops.cmd_doctor, "check the data dir and the daemon", json=True)
    add("completion", cmd_completion, "print a shell completion script").add_argument(
        "shell", choices=("bash", "zsh"))
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure is one line on stderr and a non-zero exit."""
    parser = build_parser()
    args = parser.parse_args(argv)
    ctx = Ctx(args, parser)
    try:
        return args.func(ctx)
    except CliError as exc:
        return _fail(exc.message, exc.code)
    except FlowdError as exc:
        return _fail(exc.message)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        return _fail(f"{exc.strerror}: {exc.filename}" if exc.filename else str(exc))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # never a traceback, but say it is a bug
        if os.environ.get("FLOWCTL_DEBUG"):
            raise
        return _fail(f"unexpected {type(exc).__name__}: {exc} (FLOWCTL_DEBUG=1 shows where)")
    finally:
        ctx.close()


def _fail(message: str, code: int = 1) -> int:
    print(f"flowctl: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
