"""The data-dir lock: ``flowd.lock``, held exclusively for the daemon's whole life.

The file is never renamed or replaced (a rename would orphan the lock), so
its JSON content is rewritten in place; readers retry a half-written read.
It tells clients where the daemon listens and tells a second daemon who holds
the directory.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson
import portalocker
import psutil
from flowd_client.discovery import LOCK_NAME, read_lock_info

from .fsio import IO, write_all


class DataDirBusy(Exception):
    """Another process holds the data dir; the message names it."""


def describe_holder(info: dict[str, Any]) -> str:
    """'pid 123 (flowd --data-dir ..., started 2026-...)' from the lock's content."""
    pid = info.get("pid")
    text = f"pid {pid}"
    try:
        proc = psutil.Process(int(pid))
        cmd = " ".join(proc.cmdline()) or proc.name()
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(proc.create_time()))
        text += f" ({cmd}, started {started})"
    except (psutil.Error, TypeError, ValueError):
        pass
    return text


class DataDirLock:
    """Exclusive portalocker lock on ``flowd.lock``; content updated in place."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self.file: Any = None

    def acquire(self, wait: float = 0.5) -> None:
        """Take the lock or raise DataDirBusy naming the holder.

        Waits briefly because a client probing liveness may hold a shared
        lock for a moment.
        """
        f = open(self.path, "a+b")  # noqa: SIM115 - held for the daemon's life
        deadline = time.monotonic() + wait
        while True:
            try:
                portalocker.lock(f, portalocker.LOCK_EX | portalocker.LOCK_NB)
                break
            except portalocker.LockException:
                if time.monotonic() >= deadline:
                    f.close()
                    info = read_lock_info(self.path.parent) or {}
                    raise DataDirBusy(
                        f"data dir {self.path.parent} is in use by {describe_holder(info)}"
                    ) from None
                time.sleep(0.05)
        os.chmod(self.path, 0o600)
        self.file = f

    def write(self, info: dict[str, Any]) -> None:
        """Rewrite the content in place (the inode must stay the one we locked)."""
        data = orjson.dumps(info, option=orjson.OPT_INDENT_2) + b"\n"
        fd = self.file.fileno()
        IO.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        write_all(fd, data)
        IO.fsync(fd)

    def release(self) -> None:
        if self.file is None:
            return
        try:
            IO.ftruncate(self.file.fileno(), 0)
        except OSError:
            pass
        portalocker.unlock(self.file)
        self.file.close()
        self.file = None

