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
from typing import Any

import orjson

from . import cli_ops
from .cli_ops import CliError, Ctx, emit_json, pretty, span, when
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


# ------------------------------------------------------------------ completion


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _flags(p: argparse.ArgumentParser, valued: bool | None = None) -> list[str]:
    """Option strings of ``p`` (only those taking a value, or only switches, if asked)."""
    return [o for a in p._actions for o in a.option_strings
            if valued is None or (a.nargs != 0) == valued]


def _words(p: argparse.ArgumentParser) -> str:
    choices = [c for a in p._actions if not a.option_strings and a.choices for c in a.choices]
    return " ".join(_flags(p) + choices)


def bash_completion(parser: argparse.ArgumentParser) -> str:
    cmds = _commands(parser)
    valued = sorted({o for p in [parser, *cmds.values()] for o in _flags(p, True)})
    cases = "\n".join(f"        {n}) words=\"{_words(p)}\" ;;" for n, p in cmds.items())
    return f"""# bash completion for flowctl (from `flowctl completion bash`)
_flowctl() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local cmd="" words i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            {"|".join(_flags(parser, True))}) ((i++)) ;;
            -*) ;;
            *) cmd="${{COMP_WORDS[i]}}"; break ;;
        esac
    done
    case "$prev" in
        --data-dir) COMPREPLY=($(compgen -d -- "$cur")); return ;;
        {"|".join(valued)}) return ;;
    esac
    case "$cmd" in
        "") words="{" ".join(_flags(parser) + list(cmds))}" ;;
{cases}
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
    case "$cmd" in export|import|migrate) COMPREPLY+=($(compgen -f -- "$cur")) ;; esac
}}
complete -F _flowctl flowctl
"""


def _zsh_spec(a: argparse.Action) -> str:
    """One ``_arguments`` spec: '--opt[help]:value:' or ':positional:completer'."""
    if not a.option_strings:
        what = f"({' '.join(a.choices)})" if a.choices else (
            "_files" if a.dest in ("file", "src", "dst") else " ")
        return f"'{':' if a.nargs == '?' else ''}:{a.dest}:{what}'"
    text = (a.help or "").translate(str.maketrans("[]", "()", "'"))
    value = f":{a.dest}:" + ("_files -/" if a.dest == "data_dir" else "") if a.nargs != 0 else ""
    return " ".join(f"'{o}[{text}]{value}'" for o in a.option_strings)


def zsh_completion(parser: argparse.ArgumentParser) -> str:
    cmds = _commands(parser)
    described = "\n".join(f"    '{n}:{COMMANDS[n][1].replace(chr(39), '')}'" for n in cmds)
    specs = {n: " ".join(_zsh_spec(a) for a in p._actions
                         if a.dest != "help" and not isinstance(a, argparse._SubParsersAction))
             for n, p in [("", parser), *cmds.items()]}
    cases = "\n".join(f"        {n}) _arguments {specs[n]} ;;" for n in cmds)
    return f"""#compdef flowctl
# zsh completion for flowctl (from `flowctl completion zsh`)
_flowctl() {{
  local -a cmds
  cmds=(
{described}
  )
  local state
  _arguments -C {specs['']} '1:command:->cmd' '*::arg:->args' && return
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


_ID = ("id", {})
_JSON = ("--json", {"action": "store_true", "help": "JSON output"})

#: name -> (handler, help, arguments); the parser and the completion scripts come from here
COMMANDS: dict[str, tuple[Handler, str, list[tuple[str, dict[str, Any]]]]] = {
    "ping": (cmd_ping, "check that the daemon answers",
             [("--wait", {"type": float, "default": 0.0, "help": "keep trying this many s"})]),
    "status": (cmd_status, "is the daemon up; revisions and snapshot lag", [_JSON]),
    "ls": (cmd_ls, "list flows (* marks the current one)", [_JSON]),
    "show": (cmd_show, "show one flow", [_ID, _JSON]),
    "add": (cmd_add, "add a flow (it becomes current); prints its id",
            [("name", {}), ("--plans", {"help": "a JSON list of plan objects"})]),
    "rm": (cmd_rm, "delete a flow", [_ID]),
    "use": (cmd_use, "make a flow the current one", [_ID]),
    "current": (cmd_current, "show the current flow", [_JSON]),
    "rename": (cmd_rename, "rename a flow", [_ID, ("name", {})]),
    "save": (cmd_save, "write flows.json now", []),
    "stats": (cmd_stats, "the daemon's counters", [_JSON]),
    "watch": (cmd_watch, "print changes as they happen", [
        _JSON, ("--since", {"type": int, "help": "start after this revision (default: now)"}),
        ("--timeout", {"dest": "idle", "type": float, "help": "stop after this many idle s"})]),
    "export": (cli_ops.cmd_export, "write the store to a 3.0 JSON file",
               [("file", {"help": "target file, or - for stdout"})]),
    "import": (cli_ops.cmd_import, "merge a flows file of any version into the store", [
        ("file", {}), ("--replace", {"action": "store_true", "help": "delete what it lacks"}),
        ("--dry-run", {"action": "store_true", "help": "print the diff, change nothing"})]),
    "migrate": (cli_ops.cmd_migrate, "convert a legacy flows file to 3.0, offline", [
        ("src", {}), ("dst", {"nargs": "?", "help": "default: SRC, original kept as a backup"}),
        ("--verbose", {"action": "store_true", "help": "list every change"})]),
    "doctor": (cli_ops.cmd_doctor, "check the data dir and the daemon", [_JSON]),
    "completion": (cmd_completion, "print a shell completion script",
                   [("shell", {"choices": ("bash", "zsh")})]),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flowctl", description="talk to flowd, the flows daemon")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--data-dir", help="the daemon's data dir (default: FLOWD_DATA_DIR or "
                       "~/.local/state/flowd)")
    where.add_argument("--endpoint", help="connect here instead (e.g. ipc:///path/flowd.sock)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="CMD")
    for name, (fn, text, arguments) in COMMANDS.items():
        sp = sub.add_parser(name, help=text, description=text)
        sp.set_defaults(func=fn)
        for flag, kw in arguments:
            sp.add_argument(flag, **kw)
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
