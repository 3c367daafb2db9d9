"""Keeping evidence aside: files flowd could not trust are never lost.

Names are ``<file>.<tag>-<UTC time>`` (plus ``-N`` if that exists already);
an existing name is never overwritten (hard link or O_EXCL), and flowd never
deletes these files. An operator reads them, merges by hand, or removes them.
"""

from __future__ import annotations

import errno
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from .fsio import IO, fsync_dir, write_all
from .ownfiles import create_new, open_own

log = logging.getLogger("flowd.evidence")


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def _candidates(path: Path, tag: str) -> list[Path]:
    base = f"{path.name}.{tag}-{_stamp()}"
    return [path.with_name(base)] + [path.with_name(f"{base}-{i}") for i in range(1, 1000)]


def _copy_exclusive(src: Path, dst: Path) -> None:
    with os.fdopen(open_own(src), "rb") as f:
        fd = create_new(dst)
        try:
            while chunk := f.read(1 << 20):
                write_all(fd, chunk)
            IO.fsync(fd)
        finally:
            os.close(fd)


def keep_aside(path: Path, tag: str, *, move: bool = False) -> Path:
    """Preserve ``path``'s bytes under a fresh name; with ``move`` the original goes away.

    Without ``move`` the original stays where it is (the caller replaces it
    atomically later), so no reader ever finds the file missing. A link, FIFO
    or foreign file is linked or renamed as itself, never followed or read.
    """
    for dst in _candidates(path, tag):
        try:
            IO.link(path, dst)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EXDEV, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            if move:  # the directory is flowd's: nobody else can take the name meanwhile
                if os.path.lexists(dst):
                    continue
                os.rename(path, dst)
                fsync_dir(path.parent)
                return dst
            try:
                _copy_exclusive(path, dst)
            except FileExistsError:
                continue
        if move:
            os.unlink(path)
        fsync_dir(path.parent)
        return dst
    raise FileExistsError(f"no free evidence name for {path}")


def move_aside(src: Path, like: Path, tag: str) -> Path:
    """Give ``src`` (a hard link flowd holds) an evidence name of ``like``'s, then drop
    the holding name: the bytes stay, under ``<like>.<tag>-<time>``."""
    for dst in _candidates(like, tag):
        try:
            IO.link(src, dst)
        except FileExistsError:
            continue
        os.unlink(src)
        fsync_dir(like.parent)
        return dst
    raise FileExistsError(f"no free evidence name for {like}")


def write_aside(directory: Path, name: str, tag: str, data: bytes) -> Path:
    """Write new evidence (e.g. the losing side of a merge) under a fresh name."""
    for dst in _candidates(directory / name, tag):
        try:
            fd = create_new(dst)
        except FileExistsError:
            continue
        try:
            write_all(fd, data)
            IO.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(directory)
        return dst
    raise FileExistsError(f"no free evidence name for {directory / name}")


def list_evidence(directory: Path) -> list[Path]:
    """Files flowd kept aside in ``directory`` (for doctor and stats)."""
    tags = (".corrupt-", ".stray-", ".backup-", ".merge-", ".torn-", ".foreign-",
            ".duplicate-")
    return sorted(p for p in directory.iterdir() if any(t in p.name for t in tags))

