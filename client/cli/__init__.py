"""``flowctl``: the command line over :class:`FlowClient` (and flowd's offline tools).

Human output by default, ``--json`` (before or after the command) on every
read command. Failures print one line, ``flowctl: <message>``, never a
traceback; the exit codes are :mod:`flowd_client.exitcodes`, shared with
``flowd``. Offline work (migrate, the on-disk half of doctor, normalizing
legacy files for import) runs ``python -m flowd.offline`` as a subprocess,
because this package never imports the daemon.

This module holds the command table, the parser and ``main``; the commands
live in the modules of this package: ``flows``, ``daemon``, ``stop``, ``transfer``,
``doctor``, ``service``, ``keys`` and ``completion``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import __version__, exitcodes
from ..errors import FlowdError, InvalidArgumentError, TooLargeError, UnavailableError
from ..hints import start_hint
from .completion import cmd_completion
from .context import CliError, Ctx
from .daemon import cmd_ping, cmd_stats, cmd_status, cmd_watch
from .doctor import cmd_doctor, cmd_migrate
from .flows import cmd_add, cmd_current, cmd_ls, cmd_rename, cmd_rm, cmd_save, cmd_show, cmd_use
from .keys import cmd_keys
from .output import OneLineParser
from .service import cmd_service
from .stop import cmd_stop
from .transfer import cmd_export, cmd_import

Handler = Callable[[Ctx], int]


_ID: tuple[str, dict[str, Any]] = ("id", {})
#: marks a command that has JSON output; ``--json`` may then come before or after it
_JSON = ("--json", {"action": "store_true", "default": argparse.SUPPRESS, "help": "JSON output"})

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
    "stats": (cmd_stats, "the daemon's counters", [_JSON, (
        "--prometheus", {"action": "store_true",
                         "help": "Prometheus text format (node_exporter textfile collector)"})]),
    "watch": (cmd_watch, "print changes as they happen", [
        _JSON, ("--since", {"type": int, "help": "start after this revision (default: now)"}),
        ("--timeout", {"dest": "idle", "type": float, "help": "stop after this many idle s"})]),
    "stop": (cmd_stop, "stop the daemon of the data dir (SIGTERM) and wait for it to exit", [
        ("--timeout", {"type": float, "default": argparse.SUPPRESS,
                       "help": "seconds to wait for it to exit (default: the global --timeout)"})
    ]),
    "export": (cmd_export, "write the store to a 3.0 JSON file",
               [("file", {"help": "target file, or - for stdout"})]),
    "import": (cmd_import, "merge a flows file of any version into the store", [
        ("file", {}), ("--replace", {"action": "store_true", "help": "delete what it lacks"}),
        ("--dry-run", {"action": "store_true", "help": "print the diff, change nothing"})]),
    "migrate": (cmd_migrate, "convert a legacy flows file to 3.0, offline", [
        ("src", {}), ("dst", {"nargs": "?", "help": "default: SRC, original kept as a backup"}),
        ("--verbose", {"action": "store_true", "help": "list every change"})]),
    "doctor": (cmd_doctor, "check the data dir and the daemon", [_JSON]),
    "service": (cmd_service, "install the systemd unit for the flowd next to this flowctl", [
        ("action", {"choices": ("install",)}),
        ("--user", {"action": "store_true", "help": "a per-user unit (systemctl --user)"}),
        ("--system", {"action": "store_true", "help": "the system unit (user flowd)"}),
        ("--dry-run", {"action": "store_true", "help": "print the unit, write nothing"}),
        ("--unit-dir", {"help": "write it here instead of systemd's directory"}),
        ("--force", {"action": "store_true", "help": "replace a different unit file"})]),
    "keys": (cmd_keys, "CURVE keys for tools on other hosts (tcp)", [
        ("action", {"choices": ("new", "allow", "revoke", "list")}),
        ("target", {"nargs": "?", "help": "NAME (new, revoke) or PATH/NAME.key (allow)"}),
        ("--dir", {"help": "where keys new writes NAME.key and NAME.key_secret (default: .)"}),
        ("--curve-dir", {"help": "flowd's --curve-dir (allow, revoke, list; default: "
                                 "FLOWD_CURVE_DIR)"}), _JSON]),
    "completion": (cmd_completion, "print a shell completion script",
                   [("shell", {"choices": ("bash", "zsh")})]),
}
JSON_COMMANDS = frozenset(n for n, (_, _, arguments) in COMMANDS.items() if _JSON in arguments)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="flowctl", description="talk to flowd, the flows daemon",
                                epilog=exitcodes.epilog(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--data-dir", help="the daemon's data dir (default: FLOWD_DATA_DIR or "
                       "~/.local/state/flowd)")
    where.add_argument("--endpoint", help="connect here instead (e.g. ipc:///path/flowd.sock)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
    p.add_argument("--json", action="store_true", help="JSON output (read commands)")
    p.add_argument("--autostart", action="store_true", default=None,
                   help="start a flowd for the data dir if none runs (also FLOWD_AUTOSTART=1)")
    p.add_argument("--curve-secret", metavar="PATH", help="this tool's NAME.key_secret, for a "
                   "tcp --endpoint of a CURVE flowd (also FLOWD_CURVE_SECRET)")
    p.add_argument("--curve-server", metavar="PATH_OR_Z85", help="that flowd's server.key or "
                   "its public key (also FLOWD_CURVE_SERVER)")
    p.add_argument("--version", action="version", version=f"flowctl {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="CMD")
    for name, (fn, text, arguments) in COMMANDS.items():
        sp = sub.add_parser(name, help=text, description=text, epilog=exitcodes.epilog(),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.set_defaults(func=fn)
        for flag, kw in arguments:
            sp.add_argument(flag, **kw)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure is one line on stderr and a code from the table."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.json and args.cmd not in JSON_COMMANDS:
        parser.error(f"{args.cmd} has no JSON output (--json works with "
                     f"{', '.join(sorted(JSON_COMMANDS))})")
    ctx = Ctx(args, parser)
    try:
        return args.func(ctx)
    except CliError as exc:
        return _fail(exc.message, exc.code)
    except FlowdError as exc:
        return _fail(_message(exc), _code(exc))
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exitcodes.FAILED
    except OSError as exc:
        return _fail(f"{exc.strerror}: {exc.filename}" if exc.filename else str(exc))
    except KeyboardInterrupt:
        return exitcodes.INTERRUPTED
    except Exception as exc:  # never a traceback, but say it is a bug
        if os.environ.get("FLOWCTL_DEBUG"):
            raise
        return _fail(f"unexpected {type(exc).__name__}: {exc} (FLOWCTL_DEBUG=1 shows where)")
    finally:
        ctx.close()


def _code(exc: FlowdError) -> int:
    if isinstance(exc, UnavailableError):
        return exitcodes.UNAVAILABLE
    if isinstance(exc, (InvalidArgumentError, TooLargeError)):
        return exitcodes.USAGE
    return exitcodes.FAILED


def _message(exc: FlowdError) -> str:
    """The client's message, with the start hint a flowctl user can follow."""
    if exc.data.get("hint") == "start" and isinstance(exc.data.get("what"), str):
        d = exc.data.get("data_dir")
        return f"{exc.data['what']}; {start_hint(Path(d) if d else None, cli=True)}"
    return exc.message


def _fail(message: str, code: int = exitcodes.FAILED) -> int:
    """One line on stderr (an empty message: the failure was reported already)."""
    if message:
        print(f"flowctl: {' '.join(message.split())}", file=sys.stderr)
    return code

