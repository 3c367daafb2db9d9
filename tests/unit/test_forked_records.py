"""Records from a forked child: all of them in order, or None; and a child that
touches nothing it shares with the daemon (its descriptors, its signal handlers)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from flowd.storage.forked_records import ForkedRecords


def _finish(child: ForkedRecords) -> list[tuple[int, bytes]] | None:
    try:
        return child.finish()
    finally:
        child.close()


def test_every_record_comes_in_order_however_big() -> None:
    """Payloads bigger than a pipe's buffer, read while the child still writes."""
    def produce() -> Iterator[tuple[int, bytes]]:
        for i in range(40):
            yield i, bytes([i % 256]) * (i * 37_000)

    child = ForkedRecords(produce)
    seen = 0
    for _ in range(1000):  # the parent reads some without waiting, as the loader does
        seen = len(child.drain())
        if seen:
            break
        time.sleep(0.001)
    got = _finish(child)
    assert got == [(i, bytes([i % 256]) * (i * 37_000)) for i in range(40)] and seen


@pytest.mark.parametrize("how", ["raises", "exits early", "is killed"])
def test_a_child_that_does_not_finish_gives_none(how: str) -> None:
    def produce() -> Iterator[tuple[int, bytes]]:
        yield 1, b"one"
        if how == "raises":
            raise ValueError("no")
        if how == "exits early":
            os._exit(0)
        os.kill(os.getpid(), signal.SIGKILL)

    assert _finish(ForkedRecords(produce)) is None


def test_the_child_closes_every_descriptor_it_inherits() -> None:
    """The data dir's lock, the sockets: held by the daemon only, even while a child
    runs (a restart after kill -9 must not find the lock taken by a child)."""
    read, write = os.pipe()
    try:
        def produce() -> Iterator[tuple[int, bytes]]:
            for fd in (read, write):
                try:
                    os.fstat(fd)
                    yield 1, b""
                except OSError:
                    yield 0, b""

        assert _finish(ForkedRecords(produce)) == [(0, b""), (0, b"")]
        os.fstat(write)  # still open here
    finally:
        os.close(read)
        os.close(write)


def test_the_child_dies_of_a_stop_signal_the_daemon_handles() -> None:
    """A service manager's SIGTERM to the whole group ends the child, not a copy of the
    daemon's handler in it."""
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        def wait() -> Iterator[tuple[int, bytes]]:
            yield 1, b""
            signal.pause()
            yield 2, b""

        child = ForkedRecords(wait)
        for _ in range(5000):
            if child.drain():
                break
            time.sleep(0.001)
        os.kill(child.pid, signal.SIGTERM)
        assert _finish(child) is None
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_close_kills_and_reaps_a_child_still_running() -> None:
    def forever() -> Iterator[tuple[int, bytes]]:
        yield 1, b""
        signal.pause()
        yield 2, b""

    child = ForkedRecords(forever)
    pid = child.pid
    child.close()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped: no zombie left
    assert child.fd == -1
