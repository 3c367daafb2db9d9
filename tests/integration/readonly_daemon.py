"""Run a real ``flowd`` whose file system turns read-only when a trigger file appears.

    python readonly_daemon.py TRIGGER flowd-args...

A real read-only remount is refused while flowd holds files open for writing
(EBUSY), so the daemon's own calls are made to fail as a read-only file system
fails them: from the moment TRIGGER exists, every call that would change a
file (open for writing, write, unlink, rename, link, truncate, chmod) raises
EROFS. Used to check that stopping there is one line and exit code 1.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Any

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def main() -> int:
    trigger = Path(sys.argv[1])

    def erofs() -> OSError:
        return OSError(errno.EROFS, os.strerror(errno.EROFS))

    def guard(fn: Any) -> Any:
        def call(*args: Any, **kw: Any) -> Any:
            if trigger.exists():
                raise erofs()
            return fn(*args, **kw)
        return call

    real_open = os.open

    def open_(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        if flags & WRITE_FLAGS and trigger.exists():
            raise erofs()
        return real_open(path, flags, mode, **kw)

    for name in ("unlink", "remove", "rename", "replace", "link", "ftruncate", "chmod",
                 "fchmod", "fchown", "mkdir", "symlink"):
        setattr(os, name, guard(getattr(os, name)))
    os.open = open_  # type: ignore[assignment]
    from flowd.__main__ import main as flowd_main
    from flowd.storage.fsio import IO

    for name in ("write", "replace", "link", "ftruncate", "fallocate"):
        setattr(IO, name, guard(getattr(IO, name)))
    return flowd_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
