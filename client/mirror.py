"""The cached client's local mirror: loaded once, kept current from the change feed.

Reads are dict lookups in this process. A background thread applies the feed
in revision order; a gap is filled from the daemon's history, and a compacted
history (or a feed that fell too far behind) triggers a full reload. The
client's own writes wait until the mirror holds their revision, so a tool
always reads its own writes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import zmq

from .api import StoreRead, catch_up_steps, store_steps
from .connection import Connection, drive
from .errors import CompactedError, FlowdError
from .feed import IDLE_CHECK, Sequencer, follow, run_follow
from .model import Change, Flow
from .sockets import open_subscriber

log = logging.getLogger("flowd_client.mirror")


class Mirror:
    """Over a connection of its own client, and the feed at ``events``."""

    def __init__(self, connection: Connection, events: str) -> None:
        self.connection = connection
        self.events = events
        self.cond = threading.Condition()
        self.flows: dict[str, Flow] = {}
        self.names: dict[str, dict[str, None]] = {}
        self.current_flow_id: str | None = None
        self.revision = -1
        self.resyncs = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    # ------------------------------------------------------------ reads

    def _fresh(self) -> None:
        if os.getpid() != self._pid:  # threads do not survive fork: start over here
            self.__init__(self.connection, self.events)  # type: ignore[misc]
            self.start()

    def current(self) -> str | None:
        self._fresh()  # (reading the attribute directly would miss a fork)
        return self.current_flow_id

    def all_flows(self) -> dict[str, Flow]:
        self._fresh()
        with self.cond:
            return dict(self.flows)

    def get(self, flow_id: str | None) -> Flow | None:
        self._fresh()
        return self.flows.get(flow_id) if flow_id is not None else None

    def read_store(self) -> StoreRead:
        self._fresh()
        with self.cond:
            return StoreRead(dict(self.flows), self.current_flow_id, self.revision)

    def find_by_name(self, name: str) -> list[Flow]:
        self._fresh()
        with self.cond:
            return [self.flows[f] for f in self.names.get(name, ())]

    # ------------------------------------------------------------ sync

    def start(self) -> None:
        sub = open_subscriber(self.connection.context, self.events,
                              self.connection.endpoints.curve)
        self.reload()
        self._thread = threading.Thread(target=self._follow, args=(sub,), daemon=True,
                                        name="flowd-mirror")
        self._thread.start()

    def reload(self) -> None:
        """Full read of the store (paged, one consistent revision)."""
        store: StoreRead = drive(self.connection, store_steps())
        names: dict[str, dict[str, None]] = {}
        for fid, flow in store.flows.items():
            names.setdefault(flow.name, {})[fid] = None
        with self.cond:
            self.flows, self.names = store.flows, names
            self.current_flow_id, self.revision = store.current_flow_id, store.revision
            self.cond.notify_all()

    def wait_for(self, revision: int, timeout: float) -> None:
        """Block until the mirror holds ``revision`` (read-your-writes)."""
        self._fresh()
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.revision < revision:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            if self.revision >= revision:
                return
        self.resyncs += 1
        self.reload()

    def _apply(self, changes: list[Change]) -> None:
        with self.cond:
            # a reload() from wait_for may have overtaken this thread: never go back
            changes = [c for c in changes if c.revision > self.revision]
            for c in changes:
                self.current_flow_id = c.current_flow_id
                if c.op == "set_current":
                    continue  # its flow is the end state of the revision, not a change
                old = self.flows.get(c.flow_id)
                if old is not None and (c.flow is None or c.flow.name != old.name):
                    ids = self.names.get(old.name, {})
                    ids.pop(c.flow_id, None)
                    if not ids:
                        self.names.pop(old.name, None)
                if c.flow is None:
                    self.flows.pop(c.flow_id, None)
                else:
                    self.flows[c.flow_id] = c.flow
                    self.names.setdefault(c.flow.name, {})[c.flow_id] = None
            if changes:
                self.revision = changes[-1].revision
            self.cond.notify_all()

    def _follow(self, sub: Any) -> None:
        try:
            while not self._stop.is_set():
                self._run(sub)
        except zmq.ZMQError:
            pass  # context terminated by close()
        finally:
            sub.close(0)

    def _run(self, sub: Any) -> None:
        """Follow from the mirror's revision until told to stop, a resync or a failure."""
        plan = follow(self.revision, floor=lambda: self.revision)
        try:
            for changes in run_follow(plan, sub, lambda seq: self._fill(seq)):
                self._apply(changes)
                if self._stop.is_set():
                    return
        except CompactedError:
            self.resyncs += 1
            self._reload_or_wait()
        except FlowdError as exc:
            log.debug("mirror: %s; retrying", exc)
            self._stop.wait(0.2)

    def _reload_or_wait(self) -> None:
        try:
            self.reload()
        except FlowdError as exc:
            log.debug("mirror: reload failed: %s; retrying", exc)
            self._stop.wait(0.2)

    def _fill(self, seq: Sequencer) -> list[Change]:
        result: list[Change] = drive(self.connection, catch_up_steps(seq))
        return result

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * IDLE_CHECK + 1)
        self._thread = None
