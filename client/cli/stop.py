"""``flowctl stop``: SIGTERM to the daemon that holds the data dir, then wait for it to exit.

The pid comes from ``flowd.lock``, but a pid in a file is only a claim: the
process may be gone and its number reused. So before signalling, the pid
must be the one the kernel says holds the exclusive lock on that very file
(``/proc/locks``, matched by device and inode), and it must be a flowd. A
stop is clean (final snapshot, lock released, exit 0), so waiting is the
whole job: the command returns when the lock is free.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil

from ..discovery import LOCK_NAME, is_locked, read_lock_info
from ..exitcodes import FAILED, UNAVAILABLE, USAGE
from .context import CliError, Ctx

PROC_LOCKS = Path("/proc/locks")


def kernel_lock_holder(lock_path: Path, proc_locks: Path = PROC_LOCKS) -> int | None:
    """The pid holding an exclusive flock on ``lock_path`` per the kernel (None: nobody,
    or this system has no /proc/locks)."""
    try:
        st = os.stat(lock_path)
        text = proc_locks.read_text()
    except OSError:
        return None
    want = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or "->" in fields or fields[1] != "FLOCK" or fields[3] != "WRITE":
            continue  # "->" marks a waiter, not a holder
        try:
            major, minor, inode = fields[5].split(":")
            if (int(major, 16), int(minor, 16), int(inode)) == want:
                return int(fields[4])
        except ValueError:
            continue
    return None


def _holds_open(pid: int, lock_path: Path) -> bool:
    """Fallback where /proc/locks is missing: the process has the lock file open."""
    try:
        target = lock_path.resolve()
        return any(Path(f.path) == target for f in psutil.Process(pid).open_files())
    except (psutil.Error, OSError):
        return False


def verified_holder(d: Path, deadline: float) -> int:
    """The pid of the flowd holding ``d``'s lock, checked against the kernel; waits (until
    ``deadline``) for a daemon that holds the lock but has not written its pid yet."""
    lock_path = d / LOCK_NAME
    while True:
        if not is_locked(d):
            raise CliError(f"no flowd is running for data dir {d}; nothing to stop",
                           UNAVAILABLE)
        pid = (read_lock_info(d) or {}).get("pid")
        if type(pid) is int and pid > 0:
            break
        if time.monotonic() >= deadline:
            raise CliError(f"the lock of {d} is held but names no pid yet; retry in a moment")
        time.sleep(0.05)
    holder = kernel_lock_holder(lock_path)
    confirmed = holder == pid if PROC_LOCKS.exists() else _holds_open(pid, lock_path)
    if not confirmed:
        raise CliError(f"{lock_path} names pid {pid}, but the lock is held by "
                       f"{'pid ' + str(holder) if holder else 'another process'}; "
                       "not signalling a process that may not be flowd")
    try:
        cmd = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error as exc:
        raise CliError(f"cannot inspect pid {pid}: {exc}") from None
    if "flowd" not in cmd:
        raise CliError(f"pid {pid} holds {lock_path} but is not flowd ({cmd}); not signalling it")
    return pid


def cmd_stop(ctx: Ctx) -> int:
    d = ctx.data_dir
    if d is None:
        raise CliError("stop needs the data dir (--data-dir): an endpoint names no process",
                       USAGE)
    deadline = time.monotonic() + ctx.args.timeout
    pid = verified_holder(d, deadline)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # it exited between the check and the signal: the wait below sees that
    except PermissionError:
        raise CliError(f"flowd (pid {pid}) belongs to another user; stop it as that user "
                       "(or with systemctl, if a unit runs it)") from None
    while is_locked(d) or _still_running(pid):
        if time.monotonic() >= deadline:
            raise CliError(f"flowd (pid {pid}) did not exit within {ctx.args.timeout:g} s "
                           "(a big store's final snapshot takes longer: raise --timeout, or "
                           "see its log)", FAILED)
        time.sleep(0.05)
    print(f"stopped flowd (pid {pid}) for data dir {d}")
    return 0


def _still_running(pid: int) -> bool:
    """The pid still runs the flowd we signalled (not a zombie, not a reused number)."""
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and "flowd" in " ".join(proc.cmdline())
    except psutil.Error:
        return False
