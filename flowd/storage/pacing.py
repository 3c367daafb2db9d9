"""How fast a background snapshot may write: bytes a second, and a way to let it run.

On a virtual disk every flush of the snapshot is a flush of the device's cache,
and the journal's fsync on the request path queues behind it (3-11 ms where
the fsync alone takes 0.5). Written at full speed, a snapshot flushes
back to back for as long as it runs, and about one paced write in ten met one
(p99 ~11 ms at 100k flows). Held to a rate, its flushes are small and spaced,
and a journal fsync meets a short one at most.

Pacing waits on an event, never on a lock: a caller that needs the file now
(``save(force=True)``, shutdown) calls :meth:`Pacer.hurry` and the writer
goes on at full speed. Only time is spent, never data: every change is in
the journal before any snapshot starts.
"""

from __future__ import annotations

import threading
import time


class Pacer:
    """Called after each flush with the bytes written so far; sleeps until the rate
    allows them. One per snapshot (its clock starts when it is made)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.started = time.monotonic()
        #: seconds spent waiting (not writing): a snapshot's cost is its time less this
        self.slept = 0.0
        self._hurry = threading.Event()

    def phase(self, rate: int) -> Pacer:
        """Count from now at another rate (the next step of the same snapshot: freeing
        the superseded file), keeping the waits counted and the hurry."""
        self.rate, self.started = rate, time.monotonic()
        return self

    def __call__(self, written: int) -> None:
        if self.rate <= 0 or self._hurry.is_set():
            return
        now = time.monotonic()
        wait = self.started + written / self.rate - now
        if wait > 0:
            self._hurry.wait(wait)
            self.slept += time.monotonic() - now

    def hurry(self) -> None:
        """Write the rest at full speed (thread-safe; wakes a writer that waits)."""
        self._hurry.set()
