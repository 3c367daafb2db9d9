"""Durable file primitives: every byte flowd writes goes through here.

One seam (:data:`IO`) holds the system calls that can fail on a sick disk
(write, fsync, fdatasync, replace, link). Tests swap in a wrapper to inject
ENOSPC or EIO without filling a real disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


class _Syscalls:
    """The failing-disk surface; attributes are looked up at call time."""

    write = staticmethod(os.write)
    fsync = staticmethod(os.fsync)
    fdatasync = staticmethod(getattr(os, "fdatasync", os.fsync))
    replace = staticmethod(os.replace)
    link = staticmethod(os.link)
    ftruncate = staticmethod(os.ftruncate)
    fallocate = staticmethod(os.posix_fallocate)


IO = _Syscalls()


def write_all(fd: int, data: bytes | memoryview) -> None:
    """os.write until every byte is down (short writes happen on pipes and full disks)."""
    view = memoryview(data)
    while view:
        n = IO.write(fd, view)
        if n <= 0:
            raise OSError("write returned 0 bytes")
        view = view[n:]


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or a new file in ``path`` survive a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        IO.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: Path, chunks: Iterable[bytes], mode: int = 0o600) -> None:
    """Write ``chunks`` to ``path`` (created or truncated) and fsync it; not atomic."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        for chunk in chunks:
            write_all(fd, chunk)
        IO.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, chunks: Iterable[bytes], mode: int = 0o600) -> os.stat_result:
    """Replace ``path`` so that a reader sees the old file or the new one, never a mix.

    Temp file in the same directory, fsync, ``os.replace``, fsync of the
    directory. Returns the stat of the new file (its fingerprint).
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write_durable(tmp, chunks, mode)
        st = os.stat(tmp)
        IO.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)
    return st
