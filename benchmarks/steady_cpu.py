"""The daemon's CPU over whole snapshot cycles: its steady share of a core.

A paced window of fixed length cuts the snapshot cycle anywhere. At a
million flows one cycle (a snapshot of about 9 s, then a wait of 19 times
its CPU) is longer than the scale step's 15 s window, and the window always
holds the restart's first snapshot, which has no cost yet to wait by. The
window's figure then weighs a whole snapshot against less than its period.
From one snapshot's install to a later one's, the daemon did exactly the
work of those cycles.

An install is seen as flows.json getting a new inode (an atomic replace). The
benchmark polls the file system for it, so the daemon serves no extra
request for this figure.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

POLL = 0.02
#: whole snapshot cycles the steady share is measured over, and the longest the paced
#: writes go on past the window to see them (a cycle at 1M flows: about 20-25 s)
CYCLES = 2
MAX_SECONDS = 120.0


class Installs(threading.Thread):
    """Records (time, the daemon's CPU so far) at each snapshot install, from start()."""

    def __init__(self, snapshot: Path, cpu: Callable[[], float]) -> None:
        super().__init__(name="installs", daemon=True)
        self.snapshot, self.cpu = snapshot, cpu
        self.marks: list[tuple[float, float]] = []
        self._ending = threading.Event()

    def run(self) -> None:
        last = _inode(self.snapshot)
        while not self._ending.wait(POLL):
            now = _inode(self.snapshot)
            if now is not None and now != last:
                self.marks.append((time.perf_counter(), self.cpu()))
                last = now

    def count(self) -> int:
        return len(self.marks)

    def stop(self) -> None:
        self._ending.set()
        self.join()


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:  # between the unlink and the rename of an old tool: none
        return None


def share(marks: list[tuple[float, float]]) -> dict[str, Any] | None:
    """The CPU share of a core from the first install to the last, or None when fewer
    than two were seen (no whole cycle)."""
    if len(marks) < 2:
        return None
    (t0, c0), (t1, c1) = marks[0], marks[-1]
    return {"cpu": (c1 - c0) / (t1 - t0), "cycles": len(marks) - 1, "seconds": t1 - t0}
