"""A big new file written around the page cache (O_DIRECT), in whole blocks.

perf of the daemon at 1M flows under paced writes (2026-12-03, 2 cores):
the snapshot thread was 58 % of the daemon's CPU, and 41 % of that was the
kernel copying the file into the page cache (``rep_movs_alternative`` under
``generic_perform_write``): more than joining the lines and their CRC
together. A snapshot is written once and read back only by the next start
(cold from this VM's disk: 0.38 s for 415 MB, against 0.30 s from the cache),
so the copy buys nothing, and it pushed 415 MB of other programs' cached files
out of memory every time. With O_DIRECT the device takes the staged bytes as
they are.

The bytes are staged in an aligned buffer (an anonymous mmap) and written
in whole blocks; the last partial block goes through the page cache. Where
the file system refuses O_DIRECT (tmpfs on older kernels, some FUSE and
network mounts), or refuses one of its writes (EINVAL: it wants another
alignment), the rest goes through the page cache as before: the same bytes,
the same flushes, the same system-call seam (``fsio.IO``).
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
from collections.abc import Callable

#: the alignment O_DIRECT needs of offsets, lengths and memory (ext4, xfs: 512 or 4096)
BLOCK = 4096
_DIRECT = getattr(os, "O_DIRECT", 0)

Write = Callable[[int, memoryview], None]


class StagedFile:
    """Sequential writes to a new file's fd: O_DIRECT from a staging buffer of
    ``stage`` bytes (a multiple of :data:`BLOCK`) where allowed, else straight on."""

    def __init__(self, fd: int, stage: int, write: Write) -> None:
        self.fd, self._write = fd, write
        self.buf: mmap.mmap | None = None
        #: bytes staged, and the file offset the buffer's first byte goes to
        self.fill = self.offset = 0
        if _DIRECT and stage >= BLOCK:
            buf = mmap.mmap(-1, stage - stage % BLOCK)  # page-aligned, as O_DIRECT needs
            if _set_direct(fd, True):
                self.buf = buf

    @property
    def direct(self) -> bool:
        """What is written goes to the device, not to dirty pages (until :meth:`finish`)."""
        return self.buf is not None

    def write(self, data: memoryview) -> None:
        buf = self.buf
        if buf is None:
            self._write(self.fd, data)
            return
        while data:
            n = min(len(data), len(buf) - self.fill)
            buf[self.fill:self.fill + n] = data[:n]
            self.fill += n
            data = data[n:]
            if self.fill == len(buf):
                self.drain()

    def drain(self) -> None:
        """Write the whole blocks staged; a partial block stays staged for the next."""
        buf = self.buf
        if buf is None:
            return
        whole = self.fill - self.fill % BLOCK
        if not whole:
            return
        view = memoryview(buf)
        try:
            self._write(self.fd, view[:whole])
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            # the file system wants another alignment: the page cache takes the rest,
            # from the byte the refusal stopped at (a short direct write may come first)
            self._fall_back(os.lseek(self.fd, 0, os.SEEK_CUR) - self.offset)
            return
        rest = self.fill - whole
        view[:rest] = view[whole:self.fill]
        self.fill = rest
        self.offset += whole

    def finish(self) -> None:
        """Everything staged written; the fd is an ordinary one again (for the patch)."""
        self.drain()
        self._fall_back()

    def close(self) -> None:
        """Drop the staging buffer (after :meth:`finish`, or when the write failed); the
        mapping goes with its last view (a failed write's traceback may hold one)."""
        self.buf = None

    def _fall_back(self, done: int = 0) -> None:
        """Through the page cache from here on: what is staged (past the ``done`` bytes
        already in the file) is written now."""
        buf, self.buf = self.buf, None
        if buf is None:
            return
        _set_direct(self.fd, False)
        self._write(self.fd, memoryview(buf)[done:self.fill])
        self.offset += self.fill
        self.fill = 0


def _set_direct(fd: int, on: bool) -> bool:
    """Turn O_DIRECT on or off for ``fd``; False if the file system refuses it."""
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | _DIRECT if on else flags & ~_DIRECT)
    except OSError:
        return False
    return True
