"""The heap after big loads: the memory freed during start-up handed back to the
system. (The cyclic GC paused while they build is :mod:`flowd_client.gc_pause`,
shared with the client: a stray merge spent 0.25 s of 2.4 s in the GC before.)

Loading a big store frees large temporaries (the file's bytes, each region's
lists of matches, the sidecar's records) while long-lived objects are being
allocated after them: glibc's ``free`` only returns memory at the top of its
heap, so those holes stay resident (about 30 MiB at a million flows) until
something reuses them. ``malloc_trim`` gives their pages back (madvise) when the
store is loaded, and every few pieces while flowd's own file is split (its pieces
go as its lines come: the start's peak at 1M flows went from 1,119 to 762 MiB); the
objects do not move.
"""

from __future__ import annotations

import ctypes
import logging
import time

log = logging.getLogger("flowd")


def release_free_memory() -> None:
    """``malloc_trim(0)`` where the C library has it (glibc); a no-op elsewhere. ctypes
    releases the GIL for the call."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    t0 = time.perf_counter()
    trim(0)
    log.debug("returned the heap's free pages to the system in %.3f s",
              time.perf_counter() - t0)
