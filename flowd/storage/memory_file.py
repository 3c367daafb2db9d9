"""The sidecar that holds flowd's memory of the flows.json files it wrote or absorbed.

``.flows.json.memory``: framed msgpack records (the journal's framing: length,
crc32, payload). The first frame is a header; each next one is one remembered
file. Appends are one frame plus ``fdatasync``; a torn last frame (SIGKILL
mid-append) is dropped on read, like the journal's. When the oldest files are
forgotten the whole file is rewritten atomically (temp file created
exclusively, fsync, rename, fsync of the directory).

Like every data-dir file it is opened without following links and must be a
regular file; bad bytes are kept aside and the memory starts over from what
could be read.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .evidence import keep_aside
from .frames import frame, frame_at
from .fsio import IO, fsync_dir, write_all

log = logging.getLogger("flowd.memory")

NAME = ".flows.json.memory"
HEADER = {"flowd_file_memory": 1}
#: refuse to read more than this (the memory itself is bounded well below)
MAX_READ = 512 << 20


@dataclass
class ReadResult:
    frames: list[dict[str, Any]] = field(default_factory=list)
    #: the file must be rewritten (missing, torn tail, bad bytes)
    rewrite: bool = False
    bytes: int = 0


def _open_regular(path: Path, flags: int) -> int:
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read(directory: Path) -> ReadResult:
    """Every whole frame of the sidecar; a damaged one is kept aside, never lost."""
    path = directory / NAME
    out = ReadResult(rewrite=True)
    try:
        fd = _open_regular(path, os.O_RDONLY)
    except FileNotFoundError:
        return out
    except OSError as exc:  # a link, a directory, a fifo: not ours to read
        _set_aside(path, str(exc))
        return out
    try:
        size = os.fstat(fd).st_size
        if size > MAX_READ:
            _set_aside(path, f"{size} bytes, more than flowd ever writes")
            return out
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read()
    finally:
        os.close(fd)
    out.rewrite = False
    out.bytes = len(data)
    pos = 0
    while pos < len(data):
        got = frame_at(data, pos)
        if got is None or not isinstance(got[0], dict):
            break
        out.frames.append(got[0])
        pos = got[1]
    header_ok = bool(out.frames) and out.frames[0] == HEADER
    out.frames = out.frames[1:] if header_ok else []
    if pos < len(data) or (data and not header_ok):
        aside = keep_aside(path, "corrupt")
        log.warning("%s: %d bytes after the last whole record (a cut-off write or damage) "
                    "kept as %s; the memory keeps the %d files before them",
                    NAME, len(data) - pos, aside.name, len(out.frames))
        out.rewrite = True
    return out


def _set_aside(path: Path, why: str) -> None:
    """Move an unusable sidecar out of the way by name (links are not followed)."""
    dst = path.with_name(f"{path.name}.corrupt-{time.time_ns()}")
    os.rename(path, dst)
    log.error("%s is unusable (%s): moved to %s; the memory of written files starts over "
              "(tools' files until the next snapshot merge without deletions)", NAME, why,
              dst.name)


def append(directory: Path, record: dict[str, Any]) -> int:
    """One more remembered file, durable when this returns; the bytes appended."""
    data = frame(record)
    fd = _open_regular(directory / NAME, os.O_WRONLY | os.O_APPEND)
    try:
        write_all(fd, data)
        IO.fdatasync(fd)
    finally:
        os.close(fd)
    return len(data)


def rewrite(directory: Path, records: Iterable[dict[str, Any]]) -> int:
    """Replace the sidecar atomically with ``records``; the bytes written."""
    path = directory / NAME
    tmp = directory / f"{NAME}.tmp"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    size = 0
    try:
        for record in (HEADER, *records):
            data = frame(record)
            write_all(fd, data)
            size += len(data)
        IO.fsync(fd)
        os.close(fd)
        fd = -1
        IO.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(directory)
    return size
