"""Durable file primitives: every byte flowd writes goes through here.

One seam (:data:`IO`) holds the system calls that can fail on a sick disk
(write, fsync, fdatasync, replace, link). Tests swap in a wrapper to inject
ENOSPC or EIO without filling a real disk.
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from .direct import BLOCK, StagedFile
from .ownfiles import create_new, fresh_name
from .pacing import DeviceFlushes


class _Syscalls:
    """The failing-disk surface; attributes are looked up at call time."""

    write = staticmethod(os.write)
    fsync = staticmethod(os.fsync)
    fdatasync = staticmethod(getattr(os, "fdatasync", os.fsync))
    replace = staticmethod(os.replace)
    #: never through a link: a hard link of a symbolic link is that link, not its target
    link = staticmethod(lambda src, dst: os.link(src, dst, follow_symlinks=False))
    ftruncate = staticmethod(os.ftruncate)
    fallocate = staticmethod(os.posix_fallocate)
    pwrite = staticmethod(os.pwrite)


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


def write_new(path: Path, chunks: Iterable[bytes], mode: int = 0o600,
              flush_every: int = 0,
              patch: Callable[[], tuple[int, bytes]] | None = None,
              flushed: Callable[[int], None] | None = None,
              flushes: DeviceFlushes | None = None) -> os.stat_result:
    """Create ``path`` (it must not exist: O_EXCL, so nothing planted is written
    through), write ``chunks`` and fsync; not atomic. Returns the new file's stat.
    ``patch()``, called once the chunks are written: bytes to write over the file at
    an offset (a check in the head that only the whole body determines).

    ``flush_every`` bytes, the data written so far is flushed as well: a big file's
    dirty pages otherwise pile up, and every other fsync on the disk (the journal's,
    on the request path) waits behind their writeback (173 ms at 1M flows). After each
    such flush, ``flushed(bytes written so far)`` (a pacer may sleep there). With
    ``flushes`` (the journal's, :mod:`.pacing`) a piece written around the page cache
    is left to them: it is fdatasynced here only when the next piece is due and no
    journal flush has covered it, so that one piece at most is ever unflushed."""
    fd = create_new(path, mode)
    out: StagedFile | None = None
    try:
        # a file written in flushed pieces is a big one: around the page cache (.direct),
        # each piece written at its flush (the staging holds it and a block left over)
        out = StagedFile(fd, flush_every + BLOCK if flush_every else 0, write_all)
        unflushed = written = 0
        pieces = _Flushing(fd, out, flushes)
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                piece = view[:flush_every - unflushed] if flush_every else view
                out.write(piece)
                view = view[len(piece):]
                unflushed += len(piece)
                if flush_every and unflushed >= flush_every:
                    pieces.flush()
                    written, unflushed = written + unflushed, 0
                    if flushed is not None:
                        flushed(written)
        out.finish()
        if patch is not None:
            offset, data = patch()
            if IO.pwrite(fd, data, offset) != len(data):
                raise OSError("short write of the file's check")
        IO.fsync(fd)
        return os.fstat(fd)
    finally:
        if out is not None:
            out.close()
        os.close(fd)


class _Flushing:
    """How the pieces of :func:`write_new` reach the disk: each fdatasynced once written;
    or, beside the journal (``flushes``) and around the page cache, by the journal's
    next flush, else here just before the next piece is written."""

    def __init__(self, fd: int, out: StagedFile, flushes: DeviceFlushes | None) -> None:
        self.fd, self.out, self.flushes = fd, out, flushes
        #: the last piece's mark, while no flush of this file's own covers it
        self.mark: int | None = None

    def flush(self) -> None:
        """Write the staged piece, and see to its flush."""
        flushes, out = self.flushes, self.out
        if self.mark is not None and not (flushes and flushes.covered(self.mark)):
            IO.fdatasync(self.fd)
        out.drain()
        self.mark = None
        if flushes is None or not out.direct:  # dirty pages: only this file's flush writes them
            IO.fdatasync(self.fd)
        else:
            self.mark = flushes.mark()


def atomic_write(path: Path, chunks: Iterable[bytes], mode: int = 0o600,
                 patch: Callable[[], tuple[int, bytes]] | None = None) -> os.stat_result:
    """Replace ``path`` so that a reader sees the old file or the new one, never a mix.

    Temp file under a fresh name in the same directory, fsync, ``os.replace``,
    fsync of the directory. Returns the stat of the new file (its fingerprint).
    """
    tmp = fresh_name(path)
    try:
        st = write_new(tmp, chunks, mode, patch=patch)
        IO.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)
    return st


#: blocks freed per step of :func:`release`
RELEASE_STEP = 4 << 20


def release(path: Path, freed: Callable[[int], None] | None = None) -> None:
    """Delete a big file of flowd's a slice at a time: the name goes first, the blocks
    follow in steps of :data:`RELEASE_STEP`, each made durable on its own; after each,
    ``freed(bytes freed so far)`` (a pacer may sleep there).

    Freeing a whole 435 MB file in one go (an unlink) made the next fsync of anyone on
    the disk (the journal's, for a write being acknowledged) wait 30-34 ms behind it
    (ext4 mounted with online discard). A step of 16 MiB took 10-13 ms, and a journal
    fsync waited 4-11 ms behind each: 4 MiB steps, paced, keep that wait under 5 ms.
    Only a file nobody else holds open is cut down (a write lease can be taken only
    then): a reader that opened it earlier keeps reading the whole file, as after an
    unlink; a file with other links is merely unlinked."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        path.unlink(missing_ok=True)
        return
    try:
        os.unlink(path)
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 0 and _alone(fd):
            size = whole = st.st_size
            while size > 0:
                size = max(0, size - RELEASE_STEP)
                IO.ftruncate(fd, size)
                IO.fdatasync(fd)
                if freed is not None:
                    freed(whole - size)
    finally:
        os.close(fd)


def _alone(fd: int) -> bool:
    """No other open file description of this inode (the kernel's write-lease check)."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
    except OSError:  # EAGAIN: open elsewhere; EINVAL: no leases on this file system
        return False
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    return True
