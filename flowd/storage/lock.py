"""The data-dir lock: held exclusively for the daemon's whole life, on two things.

The directory itself (an ``O_DIRECTORY`` fd) is what keeps a second daemon
out: a deleted or replaced ``flowd.lock`` cannot undo that lock. ``flowd.lock``
is what clients and older daemons look at: it tells them where the daemon
listens and who holds the directory. Its JSON content is rewritten in place
(readers retry a half-written read); when the file is removed or replaced
behind flowd's back, :meth:`DataDirLock.check` creates and locks a new one.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Any

import orjson
from flowd_client.discovery import LOCK_NAME, read_lock_info

from .evidence import keep_aside
from .fsio import IO, fsync_dir, write_all
from .ownfiles import describe, open_own, planted, user_name


class DataDirBusy(Exception):
    """Another process holds the data dir; the message names it."""


def describe_holder(info: dict[str, Any]) -> str:
    """'pid 123 (flowd --data-dir ..., started 2026-...)' from the lock's content."""
    pid: Any = info.get("pid")  # the file's content: any type (int() is checked)
    text = f"pid {pid}"
    import psutil  # noqa: PLC0415 - only a busy data dir needs it: not ~17 ms of every start

    try:
        proc = psutil.Process(int(pid))
        cmd = " ".join(proc.cmdline()) or proc.name()
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(proc.create_time()))
        text += f" ({cmd}, started {started})"
    except (psutil.Error, TypeError, ValueError):
        pass
    return text


def _flock(fd: int, wait: float) -> bool:
    """Exclusive flock within ``wait`` seconds: a client probing liveness may hold a
    shared lock for a moment."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


class DataDirLock:
    """Exclusive locks on the data dir and on ``flowd.lock``; content updated in place."""

    def __init__(self, data_dir: Path, gid: int | None = None) -> None:
        self.dir = data_dir
        self.path = data_dir / LOCK_NAME
        #: with a socket group, its members read flowd.lock to find the sockets
        self.gid = gid
        self.dir_fd: int | None = None
        self.file: Any = None
        self.info: dict[str, Any] | None = None
        #: (uid, gid, mode) flowd.lock was given: a change means it is no longer flowd's
        self.attrs: tuple[int, int, int] | None = None

    def acquire(self, dir_fd: int, wait: float = 0.5) -> None:
        """Lock ``dir_fd`` (the checked data dir) and flowd.lock, or raise DataDirBusy."""
        if not _flock(dir_fd, wait):
            raise DataDirBusy(f"data dir {self.dir} is in use by {self._holder()}")
        self.dir_fd = dir_fd
        try:
            fd = self._open(os.O_RDWR | os.O_CREAT)
            if not _flock(fd, wait):  # an older flowd that locks only the file
                os.close(fd)
                raise DataDirBusy(f"data dir {self.dir} is in use by {self._holder()}")
        except BaseException:
            self._unlock_dir()
            raise
        self.file = os.fdopen(fd, "r+b", buffering=0)

    def _holder(self) -> str:
        info = read_lock_info(self.dir)
        if not info:
            return ("another flowd (its flowd.lock is missing or being rewritten; the "
                    "holder puts it back within a second)")
        return describe_holder(info)

    def _open(self, flags: int) -> int:
        fd = open_own(self.path, flags, 0o600)
        try:
            st = os.fstat(fd)
            if st.st_nlink != 1:  # a hard link to a file elsewhere: never truncate that
                raise planted(self.path, f"has {st.st_nlink} hard links")
            if self.gid is not None and st.st_gid != self.gid:  # no chown call if not needed:
                os.fchown(fd, -1, self.gid)  # the system unit's seccomp filter refuses it
            os.fchmod(fd, 0o600 if self.gid is None else 0o640)
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        self.attrs = (st.st_uid, st.st_gid, st.st_mode)
        return fd

    def write(self, info: dict[str, Any]) -> None:
        """Rewrite the content in place (the inode must stay the one we locked)."""
        self.info = info
        data = orjson.dumps(info, option=orjson.OPT_INDENT_2) + b"\n"
        fd = self.file.fileno()
        IO.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        write_all(fd, data)
        IO.fsync(fd)

    def check(self) -> str | None:
        """None while flowd.lock is still the file we locked; else put a new one in place
        (the old thing moved aside, never followed) and say what happened."""
        if self.file is None:
            return None
        mine = os.fstat(self.file.fileno())
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            st = None
        same = st is not None and (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
        if same and (mine.st_uid, mine.st_gid, mine.st_mode) == self.attrs:
            return None
        what = "removed"
        if same:  # our inode, but given to someone else or opened up: a new one
            what = f"given to {user_name(mine.st_uid)}, mode {mine.st_mode & 0o7777:04o}"
            os.unlink(self.path)
        elif st is not None:
            what = f"replaced by {describe(self.path)}"
            what += f" (moved aside as {keep_aside(self.path, 'foreign', move=True).name})"
        fd = self._open(os.O_RDWR | os.O_CREAT | os.O_EXCL)
        if not _flock(fd, 0.5):  # a client's shared lock, held long: try again next time
            os.close(fd)
            os.unlink(self.path)
            return f"flowd.lock was {what}; a new one could not be locked yet"
        old, self.file = self.file, os.fdopen(fd, "r+b", buffering=0)
        old.close()
        if self.info is not None:
            self.write(self.info)
        fsync_dir(self.dir)
        return f"flowd.lock was {what}: created it again (the data dir itself stayed locked)"

    def release(self) -> None:
        if self.file is not None:
            try:
                IO.ftruncate(self.file.fileno(), 0)  # our own inode: opened without links
            except OSError:
                pass
            self.file.close()  # closing drops its flock
            self.file = None
        self._unlock_dir()

    def _unlock_dir(self) -> None:
        if self.dir_fd is not None:
            os.close(self.dir_fd)  # closing drops the directory's flock
            self.dir_fd = None
