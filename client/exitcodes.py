"""The exit codes of ``flowd`` and ``flowctl``: one table for both commands.

Scripts and service managers branch on these, so they mean the same thing in
either command, and both ``--help`` epilogs and the README print this table.
Pure (no imports beyond the stdlib): the daemon imports it too, with the
argparse both commands use, whose usage errors exit with USAGE.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

OK = 0
#: the operation failed: not found, refused, a FAIL check, the final snapshot failed
FAILED = 1
#: bad usage or configuration: unknown option, bad argument, a data dir that is not a
#: directory; flowd refuses to start where a data dir, file or socket path is not its own
USAGE = 2
#: the data dir is in use: another daemon holds it (or a running one refuses offline
#: work), or another process holds the daemon's endpoint
BUSY = 3
#: no daemon answers: not running, not ready within the timeout, or gone mid-request
UNAVAILABLE = 4
#: stopped by Ctrl-C (128 + SIGINT)
INTERRUPTED = 130

#: (code, meaning) in the order the help shows them
TABLE: tuple[tuple[int, str], ...] = (
    (OK, "ok"),
    (FAILED, "the operation failed (not found, refused, a FAIL check, final snapshot failed)"),
    (USAGE, "bad usage or configuration (including a data dir that is not a directory, or a "
            "data dir, file or socket that is not flowd's own)"),
    (BUSY, "the data dir is in use by another flowd (or by the running one, for offline "
           "work), or the endpoint by another process"),
    (UNAVAILABLE, "no flowd answers (not running, not ready in time, or gone)"),
    (INTERRUPTED, "interrupted (Ctrl-C)"),
)


def epilog() -> str:
    """The table as the ``--help`` epilog shows it (argparse RawDescription layout)."""
    rows = "\n".join(f"  {code:<4} {text}" for code, text in TABLE)
    return f"exit codes (the same for flowd and flowctl):\n{rows}"


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, ``prog: message (see prog --help)``,
    with the table's USAGE code, as every other failure of flowd and flowctl."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")
