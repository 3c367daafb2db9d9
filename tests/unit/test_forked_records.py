"""Records from a forked child: all of them in order, or None; and a child that
touches nothing it shares with the daemon (its descriptors, its signal handlers)."""

from __future__ import annotations

import os
import select
import signal
import struct
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
    seen: list[tuple[int, bytes]] = []
    for _ in range(1000):  # the parent reads some without waiting, as the loader does
        seen = child.drain()
        if seen:
            break
        time.sleep(0.001)
    got = _finish(child)
    assert got is not None and seen
    assert seen + got == [(i, bytes([i % 256]) * (i * 37_000)) for i in range(40)]
    assert child.records == []  # what was handed over is not kept as well


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


def _exits_within(pid: int, seconds: float) -> bool:
    """The process ``pid`` (any, not only a child) has exited within ``seconds``; killed
    if not, so that a test that fails leaves nothing running."""
    try:
        fd = os.pidfd_open(pid)  # signals through it reach that process, never a reused pid
    except ProcessLookupError:
        return True
    try:
        if select.select([fd], [], [], seconds)[0]:
            return True
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        return False
    finally:
        os.close(fd)


def test_the_child_writes_on_while_the_parent_reads_nothing() -> None:
    """The parent busy elsewhere (the memory of written files loading) does not hold the
    child up: it writes all of its records and exits, however much they are."""
    def produce() -> Iterator[tuple[int, bytes]]:
        for i in range(24):
            yield i, bytes([i]) * (1 << 20)

    child = ForkedRecords(produce)
    assert _exits_within(child.pid, 60)
    got = _finish(child)
    assert got == [(i, bytes([i]) * (1 << 20)) for i in range(24)]


def test_a_child_whose_parent_is_gone_stops() -> None:
    """Nobody will read what it writes (the daemon was killed): it stops at its next
    record instead of checking the rest of the file."""
    read, write = os.pipe()
    middle = os.fork()
    if middle == 0:  # the daemon: starts the child, tells its pid, dies
        code = 1
        try:
            os.close(read)

            def produce() -> Iterator[tuple[int, bytes]]:
                while True:
                    yield 1, b""
                    time.sleep(0.001)
            os.write(write, struct.pack("<i", ForkedRecords(produce).pid))
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    try:
        got = os.read(read, 4)
    finally:
        os.close(read)
    assert os.waitpid(middle, 0)[1] == 0 and len(got) == 4
    assert _exits_within(struct.unpack("<i", got)[0], 60)
