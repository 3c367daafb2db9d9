"""Records computed by a forked child while the parent goes on with its own share.

The start's split of flowd's own file is two jobs of about the same size: the
check (a regex over every byte, the names hashed) and the split (a bytes
object per line, the table built). Both hold the GIL, so a thread would not
help; a forked child does: it has the file's pieces and the hash secret of the
parent (the names' keys it computes are the parent's) for nothing, and sends
back only records (a region's count, its ids and its names' keys: not its
lines), which the parent takes between its own regions and holds only until
it has taken them.

The records go through an anonymous in-memory file (memfd), not a pipe: a
pipe holds 64 KiB, so a child whose parent was busy elsewhere (loading the
memory of written files, 0.3 s at a million flows) stopped at its second
region and the whole check waited for the parent. The child writes at its own
pace; the parent reads what has been written so far (a record is taken only
once all of it is there) and, once the child has exited, the rest.

The child touches nothing it shares: it closes every inherited descriptor but
its file's (the data dir's lock, the sockets), takes the default action for
the signals a service manager sends, never logs, stops once its parent is
gone, and leaves with ``os._exit`` (no atexit handler, no buffer flushed
twice). If it dies, nothing is lost: :meth:`finish` answers None and the
caller does the whole job itself.
"""

from __future__ import annotations

import errno
import os
import signal
import struct
import threading
from collections.abc import Callable, Iterable

_HEAD = struct.Struct("<qI")  # a record: its status, the length of what follows
#: the record a child sends last: without it the child did not finish
_DONE = -(1 << 62)
_READ = 1 << 22

Record = tuple[int, bytes]


class ForkedRecords:
    """``produce()`` run in a forked child; its records, in order, read in the parent.
    OSError if there is no file or process to be had (nothing is left open)."""

    def __init__(self, produce: Callable[[], Iterable[Record]]) -> None:
        #: what the child wrote and :meth:`drain` has not handed over yet, in order
        #: (never its last record, _DONE)
        self.records: list[Record] = []
        self._done = False
        self._buf = bytearray()
        self._read_to = 0
        if not hasattr(os, "memfd_create"):  # a libc without it: all done in the parent
            raise OSError(errno.ENOSYS, "memfd_create is not available")
        fd = os.memfd_create("flowd-records", os.MFD_CLOEXEC)
        parent = os.getpid()
        try:
            self.pid = os.fork()
        except OSError:
            os.close(fd)
            raise
        if self.pid == 0:
            _child(fd, parent, produce)  # never returns
        self.fd = fd

    def drain(self) -> list[Record]:
        """The records written since the last call (read without waiting), handed over."""
        self._read()
        records, self.records = self.records, []
        return records

    def finish(self) -> list[Record] | None:
        """The records not drained yet, once the child has exited; None if it did not
        finish cleanly."""
        status = self._reap()
        self._read()
        records, self.records = self.records, []
        return records if status == 0 and self._done and not self._buf else None

    def close(self) -> None:
        """The child killed if it still runs, and reaped; the file closed."""
        if self.pid > 0:
            os.kill(self.pid, signal.SIGKILL)
            self._reap()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _reap(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        return status

    def _read(self) -> None:
        """What the child wrote past what was read, parsed into whole records (a file's
        size grows only after the bytes below it are there)."""
        while self.fd >= 0 and (got := os.pread(self.fd, _READ, self._read_to)):
            self._read_to += len(got)
            self._buf += got
        self._parse()

    def _parse(self) -> None:
        """Whole records off the buffer; none after the last (finish() refuses those)."""
        buf, at = self._buf, 0
        while not self._done and len(buf) - at >= _HEAD.size:
            status, size = _HEAD.unpack_from(buf, at)
            if len(buf) - at - _HEAD.size < size:
                break
            at += _HEAD.size
            if status == _DONE:
                self._done = True
            else:
                self.records.append((status, bytes(buf[at:at + size])))
            at += size
        del buf[:at]


def _child(fd: int, parent: int, produce: Callable[[], Iterable[Record]]) -> None:
    code = 1
    try:
        os.closerange(3, fd)
        os.closerange(fd + 1, os.sysconf("SC_OPEN_MAX"))
        if threading.current_thread() is threading.main_thread():
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
        for status, payload in produce():
            if os.getppid() != parent:
                return  # the parent is gone (a kill -9): nobody reads what follows
            _send(fd, status, payload)
        _send(fd, _DONE, b"")
        code = 0
    finally:
        os._exit(code)


def _send(fd: int, status: int, payload: bytes) -> None:
    view = memoryview(_HEAD.pack(status, len(payload)) + payload)
    while view:
        view = view[os.write(fd, view):]
