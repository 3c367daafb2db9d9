"""Acting as another local user (uid/gid 65534, nobody/nogroup) in a test run as root.

The interpreter lives under /root here, so another user cannot exec it: the
"other user" is a forked child that drops its uid and gid and then runs a
function of this (already imported) process. Whatever it needs must be
imported before the fork.
"""

from __future__ import annotations

import os
import pickle
import select
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

NOBODY = 65534
NOGROUP = 65534

needs_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="needs root: these tests act as a second user (uid 65534) and chown files to it; "
           "run the suite as root (CI does) to run them")


def _drop(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def run_as(fn: Callable[..., Any], *args: Any, uid: int = NOBODY, gid: int = NOGROUP,
           timeout: float = 30.0) -> Any:
    """``fn(*args)`` in a child running as ``uid``/``gid``; its return value, or
    AssertionError carrying the child's exception text."""
    child = spawn_as(fn, *args, uid=uid, gid=gid)
    return child.result(timeout)


class Child:
    def __init__(self, pid: int, fd: int) -> None:
        self.pid, self.fd = pid, fd

    def result(self, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        data = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                self.kill()
                raise AssertionError("the other user's child did not finish in time")
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                break
            data += chunk
        os.close(self.fd)
        os.waitpid(self.pid, 0)
        status, value = pickle.loads(data)
        if status != "ok":
            raise AssertionError(f"as the other user: {value}")
        return value

    def kill(self) -> None:
        try:
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def spawn_as(fn: Callable[..., Any], *args: Any, uid: int = NOBODY,
             gid: int = NOGROUP) -> Child:
    """Start ``fn(*args)`` as another user without waiting; :meth:`Child.result` waits."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(r)
        try:
            _drop(uid, gid)
            out = ("ok", fn(*args))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            out = ("err", f"{type(exc).__name__}: {exc}")
        try:
            os.write(w, pickle.dumps(out))
        finally:
            os._exit(0)
    os.close(w)
    return Child(pid, r)


@contextmanager
def shared_dir() -> Iterator[Path]:
    """A temp dir other users can traverse (pytest's own are 0700 under a root-only dir)."""
    base = Path(tempfile.mkdtemp(prefix="flowd-test-"))
    os.chmod(base, 0o711)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)
