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
from typing import TYPE_CHECKING, Any

import zmq

from .errors import CompactedError, FlowdError
from .feed import Sequencer, configure_subscriber, decode_event
from .model import Change, Flow

if TYPE_CHECKING:
    from .client import FlowClient

log = logging.getLogger("flowd_client.mirror")
IDLE_CHECK = 1.0


class Mirror:
    def __init__(self, client: FlowClient) -> None:
        self.client = client
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
            self.__init__(self.client)  # type: ignore[misc]
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

    def find_by_name(self, name: str) -> list[Flow]:
        self._fresh()
        with self.cond:
            return [self.flows[f] for f in self.names.get(name, ())]

    # ------------------------------------------------------------ sync

    def start(self) -> None:
        sub = self.client._connection.context.socket(zmq.SUB)
        configure_subscriber(sub, self.client.events_endpoint(), self.client.curve_keys)
        self.reload()
        self._thread = threading.Thread(target=self._follow, args=(sub,), daemon=True,
                                        name="flowd-mirror")
        self._thread.start()

    def reload(self) -> None:
        """Full read of the store (paged, one consistent revision)."""
        conn = self.client._connection
        page, _ = conn.request("get_all_flows", {}, False)
        flows = {}
        while True:
            for d in page["flows"]:
                flows[d["id"]] = Flow.from_wire(d)
            if page["next"] is None:
                break
            page, _ = conn.request("get_all_flows", {"cursor": page["next"]}, False)
        names: dict[str, dict[str, None]] = {}
        for fid, flow in flows.items():
            names.setdefault(flow.name, {})[fid] = None
        with self.cond:
            self.flows, self.names = flows, names
            self.current_flow_id, self.revision = page["current_flow_id"], page["revision"]
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

    def _follow(self, sub: zmq.Socket) -> None:
        try:
            while not self._stop.is_set():
                self._step(sub)
        except zmq.ZMQError:
            pass  # context terminated by close()
        finally:
            sub.close(0)

    def _step(self, sub: zmq.Socket) -> None:
        seq = Sequencer(self.revision)
        try:
            if sub.poll(int(IDLE_CHECK * 1000)):
                event = decode_event(sub.recv_multipart())
                if event is None:
                    return
                out = seq.accept(event)
                if out is None:
                    out = self._fill(seq)
            else:
                out = self._fill(seq)  # idle: catch an event lost before subscribing
            self._apply(out)
        except CompactedError:
            self.resyncs += 1
            self.reload()
        except FlowdError as exc:
            log.debug("mirror: %s; retrying", exc)
            self._stop.wait(0.2)

    def _fill(self, seq: Sequencer) -> list[Change]:
        return self.client.catch_up(seq)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * IDLE_CHECK + 1)
        self._thread = None

    def stats(self) -> dict[str, Any]:
        return {"revision": self.revision, "flows": len(self.flows), "resyncs": self.resyncs}
