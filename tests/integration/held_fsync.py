"""Run a real ``flowd`` whose journal fdatasync waits for the test's go-ahead.

    python held_fsync.py FIFO_DIR flowd-args...

Patches the daemon's ``fsio.IO.fdatasync`` seam (nothing else): each call on
a journal segment writes one byte to ``FIFO_DIR/entered`` and then blocks
reading one byte from ``FIFO_DIR/grant``: ``b"."`` lets the fsync run, ``b"!"``
makes it fail with EIO. So a test can hold a group commit at its fsync, look at
what the daemon sent meanwhile, then let it finish or fail. Other files'
fdatasyncs (the snapshot thread's) run as usual.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path


def main() -> int:
    fifo_dir = Path(sys.argv[1])
    from flowd.__main__ import main as flowd_main
    from flowd.storage.fsio import IO
    from flowd.storage.journal import is_segment_name

    # O_RDWR: opening never blocks waiting for the other end
    entered = os.open(fifo_dir / "entered", os.O_RDWR)
    grant = os.open(fifo_dir / "grant", os.O_RDWR)
    real = IO.fdatasync

    def held(fd: int) -> None:
        if not is_segment_name(os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))):
            return real(fd)
        os.write(entered, b"e")
        verdict = os.read(grant, 1)
        if verdict == b"!":
            raise OSError(errno.EIO, "injected by held_fsync")
        return real(fd)

    IO.fdatasync = held  # type: ignore[method-assign]
    return flowd_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
