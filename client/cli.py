"""``flowctl``: the command line over :class:`FlowClient` (and flowd's offline tools).

Human output by default, ``--json`` on every read command. Failures print one
line, ``flowctl: <message>``, never a traceback. Exit codes: 0 ok, 1 failure
or not found, 2 usage. Offline work (migrate, the on-disk half of doctor,
normalizing legacy files for import) runs ``python -m flowd.offline`` as a
subprocess, because this package never imports the daemon.

This module holds the command table, the parser and ``main``; the commands
live in ``cli_flows``, ``cli_daemon``, ``cli_transfer``, ``cli_doctor`` and
``cli_completion``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from .cli_completion import cmd_completion
from .cli_context import CliError, Ctx
from .cli_daemon import cmd_ping, cmd_stats, cmd_status, cmd_watch
from .cli_doctor import cmd_doctor, cmd_migrate
from .cli_flows import cmd_add, cmd_current, cmd_ls, cmd_rename, cmd_rm, cmd_save, cmd_show, cmd_use
from .cli_transfer import cmd_export, cmd_import
from .errors import FlowdError

Handler = Callable[[Ctx], int]


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
    "export": (cmd_export, "write the store to a 3.0 JSON file",
               [("file", {"help": "target file, or - for stdout"})]),
    "import": (cmd_import, "merge a flows file of any version into the store", [
        ("file", {}), ("--replace", {"action": "store_true", "help": "delete what it lacks"}),
        ("--dry-run", {"action": "store_true", "help": "print the diff, change nothing"})]),
    "migrate": (cmd_migrate, "convert a legacy flows file to 3.0, offline", [
        ("src", {}), ("dst", {"nargs": "?", "help": "default: SRC, original kept as a backup"}),
        ("--verbose", {"action": "store_true", "help": "list every change"})]),
    "doctor": (cmd_doctor, "check the data dir and the daemon", [_JSON]),
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
