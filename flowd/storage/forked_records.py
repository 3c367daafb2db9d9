"""Records computed by a forked child while the parent goes on with its own share.

The start's split of flowd's own file is two jobs of about the same size: the
check (a regex over every byte, the names hashed) and the split (a bytes
object per line, the table built). Both hold the GIL, so a thread would not
help; a forked child does: it has the file's pieces, the expected ids and the
hash secret of the parent (the names' keys it computes are the parent's) for
nothing, and sends back only small records (a region's count and its names'
keys) through a pipe the parent drains between its own regions.

The child touches nothing it shares: it closes every inherited descriptor but
its pipe's end (the data dir's lock, the sockets), takes the default action
for the signals a service manager sends, never logs, and leaves with
``os._exit`` (no atexit handler, no buffer flushed twice). If it dies, or the
parent stops reading (BrokenPipeError), nothing is lost: :meth:`finish`
answers None and the caller does the whole job itself.
"""

from __future__ import annotations

import os
import signal
import struct
import threading
from collections.abc import Callable, Iterable

_HEAD = struct.Struct("<qI")  # a record: its status, the length of what follows
#: the record a child sends last: without it the child did not finish
_DONE = -(1 << 62)
_READ = 1 << 20

Record = tuple[int, bytes]


class ForkedRecords:
    """``produce()`` run in a forked child; its records, in order, read in the parent.
    OSError if there is no pipe or process to be had (nothing is left open)."""

    def __init__(self, produce: Callable[[], Iterable[Record]]) -> None:
        #: what the child sent so far, in order (never its last record, _DONE)
        self.records: list[Record] = []
        self._done = False
        self._buf = bytearray()
        read, write = os.pipe()
        try:
            self.pid = os.fork()
        except OSError:
            os.close(read)
            os.close(write)
            raise
        if self.pid == 0:
            os.close(read)
            _child(write, produce)  # never returns
        os.close(write)
        os.set_blocking(read, False)
        self.fd = read

    def drain(self) -> list[Record]:
        """The records sent since the last call (read without waiting)."""
        seen = len(self.records)
        while self.fd >= 0:
            try:
                got = os.read(self.fd, _READ)
            except BlockingIOError:
                break
            if not got:
                break
            self._buf += got
        self._parse()
        return self.records[seen:]

    def finish(self) -> list[Record] | None:
        """Every record, once the child has exited; None if it did not finish cleanly."""
        os.set_blocking(self.fd, True)
        while got := os.read(self.fd, _READ):
            self._buf += got
        self._parse()
        status = self._reap()
        return self.records if status == 0 and self._done and not self._buf else None

    def close(self) -> None:
        """The child killed if it still runs, and reaped; the pipe closed."""
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


def _child(write: int, produce: Callable[[], Iterable[Record]]) -> None:
    code = 1
    try:
        os.closerange(3, write)
        os.closerange(write + 1, os.sysconf("SC_OPEN_MAX"))
        if threading.current_thread() is threading.main_thread():
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
        for status, payload in produce():
            _send(write, status, payload)
        _send(write, _DONE, b"")
        code = 0
    finally:
        os._exit(code)


def _send(fd: int, status: int, payload: bytes) -> None:
    view = memoryview(_HEAD.pack(status, len(payload)) + payload)
    while view:
        view = view[os.write(fd, view):]
