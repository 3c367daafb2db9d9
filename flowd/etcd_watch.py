"""An etcd watch that outlives the stream it rides on: resumption, compaction, cancel.

The adapter opens streams (one member each, through grpc); this module keeps
the one thing that makes a watch worth having across failures: the first
revision not yet delivered. When a stream breaks it opens a new one from
there, on whichever member the adapter picks now, so no revision is lost or
delivered twice. It imports no grpc, so its rules are unit-tested on fake
streams.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from flowd_client.errors import FlowdError, UnavailableError

from .etcd_errors import compacted_watch
from .etcd_types import WatchBatch, WatchEvent

#: wait between two attempts to reopen a broken stream (interrupted by cancel)
REOPEN_PAUSE = 0.05


@dataclass(frozen=True)
class StreamMessage:
    """One watch response as the adapter hands it over (out of protobuf)."""

    revision: int
    events: tuple[WatchEvent, ...] = ()
    created: bool = False
    compact_revision: int = 0


class WatchStream(Protocol):
    """One stream on one member. ``next`` raises a FlowdError for every way the
    stream fails or ends (and StopIteration only once closed)."""

    endpoint: str

    def __next__(self) -> StreamMessage: ...

    def request_progress(self) -> None: ...

    def close(self) -> None: ...


class EtcdWatch(Iterator[WatchBatch]):
    """A watch as an iterator of WatchBatch, in revision order, none lost or repeated.

    When its stream breaks (member killed, member lost its leader, stream
    ended) it reopens from ``next_revision`` on the member the adapter picks;
    if no stream is had within ``timeout`` of the break, ``next`` raises
    UnavailableError with ``data["next_revision"]`` (watch again from there
    later). A start revision older than etcd's compaction raises
    CompactedError with ``data["compacted_revision"]``; any other error is
    raised as it is. Errors end the watch: ``next`` raises the same one again.
    ``cancel()``, from any thread, ends the iteration (StopIteration).
    """

    def __init__(self, open_stream: Callable[[int], WatchStream], start_revision: int,
                 timeout: float, what: str) -> None:
        self._open_stream = open_stream
        self._timeout = timeout
        self._what = what
        #: the first revision not yet delivered (0 until the first stream says "now")
        self.next_revision = start_revision
        self._lock = threading.Lock()
        self._stream: WatchStream | None = None
        self._cancelled = threading.Event()
        self._error: FlowdError | None = None
        self._failing_since: float | None = None
        self._up_since: float | None = None

    def __iter__(self) -> EtcdWatch:
        return self

    def __next__(self) -> WatchBatch:
        while True:
            if self._error is not None:
                raise self._error
            if self._cancelled.is_set():
                raise StopIteration
            try:
                stream = self._stream or self._open()
                msg = next(stream)
            except StopIteration:
                raise
            except FlowdError as err:
                if self._cancelled.is_set():
                    raise StopIteration from None
                self._broken(err)
                continue
            batch = self._batch(msg, stream.endpoint)
            if batch is not None:
                return batch

    def cancel(self) -> None:
        self._cancelled.set()
        with self._lock:
            if self._stream is not None:
                self._stream.close()
                self._stream = None

    def request_progress(self) -> None:
        """Ask for a progress batch: it comes once every change up to "now" is delivered."""
        with self._lock:
            if self._stream is not None:
                self._stream.request_progress()

    def _open(self) -> WatchStream:
        stream = self._open_stream(self.next_revision)
        with self._lock:
            if self._cancelled.is_set():
                stream.close()
                raise StopIteration
            self._stream = stream
        return stream

    def _close_stream(self) -> None:
        with self._lock:
            if self._stream is not None:
                self._stream.close()
                self._stream = None

    def _broken(self, err: FlowdError) -> None:
        """The stream failed: retry from next_revision, unless that has gone on too long."""
        self._close_stream()
        now = time.monotonic()
        if self._up_since is not None and now - self._up_since >= self._timeout:
            self._failing_since = None  # that stream served a while: a new failure
        self._up_since = None
        self._failing_since = self._failing_since or now
        if not isinstance(err, UnavailableError):
            self._error = err
        elif now - self._failing_since >= self._timeout:
            self._error = UnavailableError(
                f"{self._what} lost and not resumed within {self._timeout} s; watch again "
                f"from revision {self.next_revision}: {err.message}",
                {**err.data, "next_revision": self.next_revision})
        else:
            self._cancelled.wait(REOPEN_PAUSE)

    def _batch(self, msg: StreamMessage, endpoint: str) -> WatchBatch | None:
        if msg.compact_revision:
            self._close_stream()
            self._error = compacted_watch(endpoint, self.next_revision, msg.compact_revision)
            raise self._error
        if msg.created:
            self._up_since = time.monotonic()
            self.next_revision = self.next_revision or msg.revision + 1
            return None
        self._failing_since = None
        if not msg.events:
            self.next_revision = max(self.next_revision, msg.revision + 1)
            return WatchBatch(msg.revision, (), progress=True)
        self.next_revision = msg.events[-1].mod_revision + 1
        return WatchBatch(msg.revision, msg.events)
