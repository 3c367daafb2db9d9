"""A background snapshot held to a rate (flowd.storage.pacing.Pacer).

What matters: the writer waits exactly as long as the rate asks (and no wait
is counted as the snapshot's cost), and whoever needs the file now can let
it run at full speed at once, even from another thread mid-wait."""

from __future__ import annotations

import threading

import pytest

from flowd.snapshotter import CPU_DUTY, DUTY, Snapshotter
from flowd.storage import pacing
from flowd.storage.pacing import DeviceFlushes, Pacer


class FakeClock:
    """time.monotonic, moved on only by the waits it is asked for."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        self.now += timeout
        return False


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(pacing, "time", fake)
    return fake


def paced(rate: int, clock: FakeClock) -> Pacer:
    pacer = Pacer(rate)
    pacer._hurry.wait = clock.wait  # type: ignore[method-assign]
    return pacer


def test_the_writer_waits_until_the_rate_allows_what_it_wrote(clock: FakeClock) -> None:
    pacer = paced(1000, clock)
    pacer(500)
    assert clock.waits == [pytest.approx(0.5)]
    clock.now += 2.0  # the writer itself took two seconds for the next 500 bytes
    pacer(1000)
    assert len(clock.waits) == 1  # behind the rate already: no wait
    pacer(4500)
    assert clock.waits[1:] == [pytest.approx(2.0)]
    assert pacer.slept == pytest.approx(2.5)


def test_a_phase_counts_from_its_own_start_and_keeps_the_waits(clock: FakeClock) -> None:
    pacer = paced(1000, clock)
    pacer(1000)
    pacer.phase(4000)(2000)
    assert clock.waits == [pytest.approx(1.0), pytest.approx(0.5)]
    assert pacer.slept == pytest.approx(1.5)


def test_no_rate_never_waits(clock: FakeClock) -> None:
    pacer = paced(0, clock)
    pacer(10**12)
    assert clock.waits == [] and pacer.slept == 0.0


def test_hurry_wakes_a_waiting_writer_and_ends_the_pacing() -> None:
    pacer = Pacer(1)  # a gigabyte at a byte a second: decades, unless hurried
    waiting = threading.Event()
    real_wait = pacer._hurry.wait

    def wait(timeout: float | None = None) -> bool:
        waiting.set()
        return real_wait(timeout)
    pacer._hurry.wait = wait  # type: ignore[method-assign]
    writer = threading.Thread(target=pacer, args=(1 << 30,))
    writer.start()
    assert waiting.wait(10)
    pacer.hurry()
    writer.join(10)
    assert not writer.is_alive()
    waiting.clear()
    pacer(2 << 30)  # after a hurry: no more waits
    assert not waiting.is_set()


def test_a_snapshot_costs_its_time_less_its_pacing() -> None:
    """The next snapshot waits DUTY times what the last one cost the machine, not its
    paced length: pacing must not make flows.json lag further behind."""
    snap = Snapshotter(files=None, journal=None, interval=1.0,  # type: ignore[arg-type]
                       max_journal_bytes=1 << 30)
    snap.stats.observe(10.0, 1 << 20, slept=8.0)
    snap.note_change(0.0)
    assert snap.next_deadline(0.0) == pytest.approx(DUTY * 2.0)


def test_a_snapshot_that_costs_more_cpu_than_disk_waits_for_its_cpu() -> None:
    """The wait before the next snapshot is bounded by the CPU the last one's thread
    used as well: 0.4 s of CPU in 0.5 s of unpaced time holds the next one back
    CPU_DUTY x 0.4 s, more than DUTY x 0.5 s; a cheap one leaves the interval."""
    snap = Snapshotter(files=None, journal=None, interval=1.0,  # type: ignore[arg-type]
                       max_journal_bytes=1 << 30)
    snap.stats.observe(2.0, 1 << 20, slept=1.5, cpu=0.4)
    snap.note_change(0.0)
    assert CPU_DUTY * 0.4 > DUTY * 0.5
    assert snap.next_deadline(0.0) == pytest.approx(CPU_DUTY * 0.4)
    assert snap.stats.as_dict()["last_cpu_seconds"] == pytest.approx(0.4)
    snap.stats.observe(0.01, 1 << 10, cpu=0.001)
    assert snap.next_deadline(0.0) == pytest.approx(1.0)
    assert snap.stats.as_dict()["cpu_seconds"] == pytest.approx(0.401)


def test_a_flush_covers_only_what_was_written_before_it_began() -> None:
    """A journal fdatasync in flight while a piece was written may have begun before the
    piece reached the device: only one begun after the piece's mark covers it."""
    flushes = DeviceFlushes()
    flushes.begin()
    mark = flushes.mark()
    flushes.end()
    assert not flushes.covered(mark)
    flushes.begin()
    assert not flushes.covered(mark)  # begun, not ended
    flushes.end()
    assert flushes.covered(mark)


def test_a_failed_flush_covers_nothing() -> None:
    flushes = DeviceFlushes()
    mark = flushes.mark()
    flushes.begin()  # the fdatasync raised: no end
    assert not flushes.covered(mark)
    flushes.begin()
    flushes.end()
    assert flushes.covered(mark)


def test_beside_the_journal_the_writer_waits_for_its_next_flush(clock: FakeClock) -> None:
    """After the rate's wait, until the journal's next flush ends (SETTLE at most), if it
    flushed since the last piece: the piece then goes when the disk has the most time
    before the next. Counted as slept."""
    flushes = DeviceFlushes()
    waited: list[float] = []

    def wait(timeout: float) -> bool:
        waited.append(timeout)
        clock.now += 0.004
        return True
    flushes.wait = wait  # type: ignore[method-assign]
    pacer = Pacer(1000, flushes)
    pacer._hurry.wait = clock.wait  # type: ignore[method-assign]
    pacer(500)
    assert clock.waits == [pytest.approx(0.5)] and waited == []  # the journal is idle
    flushes.begin()
    flushes.end()
    pacer(1000)
    assert clock.waits[1:] == [pytest.approx(0.5)] and waited == [pacing.SETTLE]
    assert pacer.slept == pytest.approx(1.004)
    pacer(1500)
    assert waited == [pacing.SETTLE]  # no flush since the last: none to wait for
    flushes.begin()
    flushes.end()
    pacer.hurry()
    pacer(10**9)
    assert waited == [pacing.SETTLE]  # hurried: no more waits of either kind


def test_a_flush_ending_wakes_a_writer_that_waits_for_it() -> None:
    flushes = DeviceFlushes()
    woke: list[bool] = []
    writer = threading.Thread(target=lambda: woke.append(flushes.wait(60)))
    writer.start()
    for _ in range(10_000):  # until the writer, which clears the event first, waits
        flushes.begin()
        flushes.end()
        writer.join(0.01)
        if not writer.is_alive():
            break
    assert woke == [True]
