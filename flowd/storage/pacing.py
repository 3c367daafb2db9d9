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

Beside a journal that fsyncs (:class:`DeviceFlushes`), a paced snapshot leaves its
flushes to the journal. Each piece it writes around the page cache is in the device's
cache once the write returns, and the journal's next fdatasync flushes that whole
cache: a snapshot's own fdatasync per piece was one more request to this VM's virtual
disk (about 0.1 ms of CPU each, and as much for a write), and the journal's fsync met
it. So the pieces are bigger (1 MiB), each written just after a journal flush ends (the
disk has the most time before the next one then), and a piece gets a flush of its own
only if the next is due and no journal flush began after it (a journal that does not
flush, relaxed or none, leaves each piece its own flush, and no wait). At 100 journal
fsyncs a second beside 64 MiB/s (2 cores): 0.33-0.37 ms of CPU a MiB against
0.98-1.13, the journal's fsyncs p99 0.65-0.90 ms against 0.98-1.26. Durability does
not depend on it: the file is fsynced whole before it is installed.
"""

from __future__ import annotations

import threading
import time

#: the longest a paced writer waits for the journal's next flush before it writes on
#: (the journal fsyncs every 10 ms at 100 writes a second; a piece takes 16 at the rate)
SETTLE = 0.010


class DeviceFlushes:
    """The journal's fdatasyncs, counted for a snapshot written beside them on the same
    disk. The journal's thread calls :meth:`begin` and :meth:`end` around each (one at a
    time); the snapshot's reads the counts (ints: no lock needed under the GIL)."""

    def __init__(self) -> None:
        self.begun = self.ended = 0
        self._ended = threading.Event()

    def begin(self) -> None:
        self.begun += 1

    def end(self) -> None:
        """The flush succeeded (a failed one never counts: the next must cover)."""
        self.ended += 1
        self._ended.set()

    def mark(self) -> int:
        """Taken once a write has returned: :meth:`covered` says when it is flushed."""
        return self.begun

    def covered(self, mark: int) -> bool:
        """A flush begun after ``mark`` was taken has ended. Flushes run one after the
        other and only successes end, so ``ended > mark`` means flush ``mark + 1``,
        begun after the write returned, succeeded."""
        return self.ended > mark

    def wait(self, timeout: float) -> bool:
        """Until the next flush ends (True), or ``timeout`` seconds."""
        self._ended.clear()
        return self._ended.wait(timeout)


class Pacer:
    """Called after each flush with the bytes written so far; sleeps until the rate
    allows them, then (beside a journal that flushed since the last call: ``flushes``)
    until its next flush ends, :data:`SETTLE` at most. One per snapshot (its clock
    starts when it is made)."""

    def __init__(self, rate: int, flushes: DeviceFlushes | None = None) -> None:
        self.rate = rate
        self.flushes = flushes
        self.started = time.monotonic()
        #: seconds spent waiting (not writing): a snapshot's cost is its time less this
        self.slept = 0.0
        self._hurry = threading.Event()
        #: the journal's flushes ended at the last call: none since, none to wait for
        self._seen = flushes.ended if flushes is not None else 0

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
        flushes = self.flushes
        if flushes is not None and not self._hurry.is_set():
            if flushes.ended != self._seen:  # the journal flushes (none: idle, relaxed, etcd)
                flushes.wait(SETTLE)
            self._seen = flushes.ended
        self.slept += time.monotonic() - now

    def hurry(self) -> None:
        """Write the rest at full speed (thread-safe; wakes a writer that waits for the
        rate; one that waits for a flush goes on within :data:`SETTLE`)."""
        self._hurry.set()
