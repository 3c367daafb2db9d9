"""The loop's timer policy in one place: which periodic jobs exist, how often each
runs, and when the loop must wake next (the daemon's own work included: the next
snapshot, a stray merge's next step, the names index of a load).

The jobs are run by flowd.loop in the order of :data:`JOBS`; the snapshotter
says when its next snapshot is due (its interval adapts to how long the last
one took), and :meth:`Timers.next_deadline` folds that in.
"""

from __future__ import annotations

from collections.abc import Callable

#: (job, seconds between runs), in the order they run on a turn; 0 means every turn
JOBS: tuple[tuple[str, float], ...] = (
    ("stray", 1.0),  # flows.json rewritten behind flowd's back (inotify may miss it)
    ("stray-step", 0.0),  # a tool's file parsed off the loop: read in a frame a turn
    ("names-index", 0.0),  # after a load: the names index built a step a turn
    ("own-files", 0.5),  # flowd.lock and the socket files still flowd's: within a second
    ("snapshot", 0.0),
    ("fsync", 1.0),  # --durability relaxed: changes reach the disk within a second
    ("log-flush", 10.0),  # how many refusals the rate limit swallowed
    ("refusals", 0.25),  # the counts line within ~1 s of the first refusal
    ("snapshot-summary", 60.0),
    ("watchdog", 0.0),  # systemd's WatchdogSec: half of it (set by Timers)
    ("status", 5.0),
)
#: a timer job that failed is tried again after this long
RETRY_SECONDS = 1.0


class Timers:
    """When each periodic job is due. Jobs not wanted in this run (fsync outside
    relaxed mode, watchdog and status without systemd) are simply absent."""

    def __init__(self, now: float, *, relaxed: bool, notify: bool,
                 watchdog_every: float | None,
                 work_deadline: Callable[[float], float | None]) -> None:
        every = dict(JOBS)
        if watchdog_every:
            every["watchdog"] = watchdog_every
        skip = set()
        if not relaxed:
            skip.add("fsync")
        if not notify:
            skip |= {"watchdog", "status"}
        elif not watchdog_every:
            skip.add("watchdog")
        self.jobs = [(name, every[name]) for name, _ in JOBS if name not in skip]
        self.next: dict[str, float] = {name: 0.0 for name, e in self.jobs if e}
        self.next["snapshot-summary"] = now + every["snapshot-summary"]
        self.work_deadline = work_deadline

    def due(self, now: float) -> list[str]:
        """The jobs to run this turn, in order; each periodic one is rescheduled."""
        out = []
        for name, every in self.jobs:
            if not every:
                out.append(name)
            elif now >= self.next[name]:
                self.next[name] = now + every
                out.append(name)
        return out

    def next_deadline(self, now: float) -> float:
        """When the loop must look at its timers again."""
        deadlines = list(self.next.values())
        snap = self.work_deadline(now)
        if snap is not None:
            deadlines.append(snap)
        return min(deadlines, default=now + RETRY_SECONDS)
