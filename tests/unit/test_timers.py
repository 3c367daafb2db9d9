"""flowd.timers: which jobs run, in which order, and when the loop wakes next."""

from __future__ import annotations

from flowd.timers import JOBS, Timers


def make(now: float = 100.0, snap: float | None = None, **kw) -> Timers:
    opts = {"relaxed": False, "notify": False, "watchdog_every": None, **kw}
    return Timers(now, work_deadline=lambda now: snap, **opts)


def test_first_turn_runs_every_job_but_the_minute_summary_in_order() -> None:
    t = make(relaxed=True, notify=True, watchdog_every=15.0)
    want = [name for name, _ in JOBS if name != "snapshot-summary"]
    assert t.due(100.0) == want


def test_jobs_not_wanted_are_absent() -> None:
    assert {"fsync", "watchdog", "status"}.isdisjoint(make().due(100.0))
    assert "watchdog" not in make(notify=True).due(100.0)  # no WatchdogSec
    assert "fsync" in make(relaxed=True).due(100.0)


def test_a_job_is_due_again_after_its_interval() -> None:
    t = make()
    t.due(100.0)
    assert t.due(100.1) == ["stray-step", "names-index", "snapshot"]  # every-turn jobs only
    assert "refusals" in t.due(100.3) and "stray" not in t.due(100.3)
    assert "stray" in t.due(101.0)
    assert "snapshot-summary" in t.due(160.0)


def test_next_deadline_is_the_earliest_timer_or_the_snapshot() -> None:
    t = make()
    t.due(100.0)
    assert t.next_deadline(100.0) == 100.25  # refusals
    assert make(snap=100.1).next_deadline(100.0) == 0.0  # never run: due at once
    t2 = make(snap=100.1)
    t2.due(100.0)
    assert t2.next_deadline(100.0) == 100.1
