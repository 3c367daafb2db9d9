"""A test's hold on a child process flowd starts (a stray merge's parse, a first
start's parse, a restart's check of its own file): the child reads the FIFO an
environment variable names before it does anything, so that a test can act while
the child is surely running (kill the daemon, fill the disk). Unset in production.
"""

from __future__ import annotations

import os

#: a child that reads "fail" from its gate exits with this status
EXIT_TEST_FAIL = 70


def gate(env: str) -> None:
    """Wait on the FIFO ``env`` names, if set; "fail" read from it: exit."""
    fifo = os.environ.get(env)
    if fifo:
        with open(fifo, "rb") as f:
            if f.read().strip() == b"fail":
                raise SystemExit(EXIT_TEST_FAIL)
