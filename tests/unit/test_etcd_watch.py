"""The resumable etcd watch on scripted streams: no revision lost or repeated, clear ends."""

from __future__ import annotations

import threading
import time

import pytest
from flowd_client.errors import CompactedError, FlowdError, InternalError, UnavailableError

from flowd.etcd_types import WatchEvent
from flowd.etcd_watch import EtcdWatch, StreamMessage


def put(rev: int, key: bytes = b"/p/k") -> WatchEvent:
    return WatchEvent("put", key, b"v", rev, rev, 1)


def lost() -> UnavailableError:
    return UnavailableError("lost", {"reason": "connection_lost", "maybe_applied": True})


class Script:
    """Streams that play given messages then raise; records where each was opened."""

    def __init__(self, *streams: list[object]) -> None:
        self.streams = list(streams)
        self.opened: list[int] = []
        self.closed = 0

    def open(self, start: int) -> FakeStream:
        self.opened.append(start)
        items = self.streams.pop(0) if self.streams else [lost()]
        return FakeStream(self, items)


class FakeStream:
    endpoint = "http://127.0.0.1:1"

    def __init__(self, script: Script, items: list[object]) -> None:
        self.script, self.items = script, list(items)
        self.progress_asked = 0
        self.closed = threading.Event()

    def __next__(self) -> StreamMessage:
        if self.closed.is_set():
            raise StopIteration
        item = self.items.pop(0) if self.items else lost()
        if item == "block":
            self.closed.wait(30)
            raise StopIteration
        if isinstance(item, FlowdError):
            raise item
        assert isinstance(item, StreamMessage)
        return item

    def request_progress(self) -> None:
        self.progress_asked += 1

    def close(self) -> None:
        self.script.closed += 1
        self.closed.set()


def test_a_broken_stream_resumes_after_the_last_delivered_revision() -> None:
    script = Script(
        [StreamMessage(10, created=True), StreamMessage(11, (put(11),)),
         StreamMessage(12, (put(12, b"/p/a"), put(12, b"/p/b"))), lost()],
        [StreamMessage(12, created=True), StreamMessage(20), lost()],
        [StreamMessage(20, created=True), StreamMessage(25, (put(21),))],
    )
    w = EtcdWatch(script.open, 11, timeout=5.0, what="watch")
    got = [next(w) for _ in range(4)]
    assert [[e.mod_revision for e in b.events] for b in got] == [[11], [12, 12], [], [21]]
    assert got[2].progress and got[2].revision == 20
    # resumed after 12 (last event), then after 20 (the progress batch's promise)
    assert script.opened == [11, 13, 21]
    assert w.next_revision == 22


def test_from_now_learns_the_revision_from_the_first_stream() -> None:
    script = Script([StreamMessage(7, created=True), lost()],
                    [StreamMessage(7, created=True), StreamMessage(8, (put(8),))])
    w = EtcdWatch(script.open, 0, timeout=5.0, what="watch")
    assert next(w).events[0].mod_revision == 8
    assert script.opened == [0, 8]


def test_compaction_ends_the_watch_with_the_compacted_revision() -> None:
    script = Script([StreamMessage(50, created=True), StreamMessage(50, compact_revision=40)])
    w = EtcdWatch(script.open, 5, timeout=5.0, what="watch")
    with pytest.raises(CompactedError) as err:
        next(w)
    assert err.value.data["compacted_revision"] == 40
    with pytest.raises(CompactedError):
        next(w)
    assert script.opened == [5] and script.closed == 1


def test_an_error_that_is_not_unavailability_is_raised_at_once() -> None:
    bad = InternalError("no", {"reason": "permission_denied"})
    script = Script([bad])
    w = EtcdWatch(script.open, 1, timeout=5.0, what="watch")
    with pytest.raises(InternalError):
        next(w)
    assert script.opened == [1]


def test_no_stream_within_the_timeout_is_unavailable_with_where_to_resume() -> None:
    script = Script([StreamMessage(3, created=True), StreamMessage(4, (put(4),))])
    w = EtcdWatch(script.open, 4, timeout=0.3, what="etcd watch of b'/p/'")
    next(w)
    start = time.monotonic()
    with pytest.raises(UnavailableError) as err:
        next(w)
    assert 0.3 <= time.monotonic() - start < 10
    assert err.value.data["next_revision"] == 5 and "from revision 5" in err.value.message
    assert set(script.opened[1:]) == {5} and len(script.opened) > 2


def test_cancel_from_another_thread_ends_a_blocked_iteration() -> None:
    script = Script([StreamMessage(3, created=True), "block"])
    w = EtcdWatch(script.open, 4, timeout=5.0, what="watch")
    ended = threading.Event()

    def follow() -> None:
        for _ in w:
            pass
        ended.set()
    t = threading.Thread(target=follow, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not script.opened and time.monotonic() < deadline:
        time.sleep(0.01)
    w.cancel()
    assert ended.wait(10)
    with pytest.raises(StopIteration):
        next(w)


def test_progress_requests_go_to_the_open_stream() -> None:
    script = Script([StreamMessage(3, created=True), StreamMessage(3)])
    w = EtcdWatch(script.open, 4, timeout=5.0, what="watch")
    w.request_progress()  # no stream yet: nothing to ask
    assert next(w).progress
    w.request_progress()
    assert w._stream is not None and w._stream.progress_asked == 1  # type: ignore[attr-defined]
