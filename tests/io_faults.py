"""Failing syscalls for tests, through the daemon's one IO seam (flowd.storage.fsio.IO)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flowd.storage.fsio import IO


@contextmanager
def fault(*names: str, err: int = errno.ENOSPC) -> Iterator[dict[str, int]]:
    """Every call of the named IO functions fails with ``err`` until the block ends;
    yields how many calls failed, per name."""
    saved = {name: IO.__dict__.get(name) for name in names}
    calls = dict.fromkeys(names, 0)

    def failing(name: str) -> Any:
        def call(*args: Any) -> Any:
            calls[name] += 1
            raise OSError(err, os.strerror(err))
        return call

    for name in names:
        setattr(IO, name, failing(name))
    try:
        yield calls
    finally:
        for name, old in saved.items():
            if old is None:
                delattr(IO, name)
            else:
                setattr(IO, name, old)
