"""The etcd backend: flowd's store of record is an etcd cluster shared by many hosts.

Each write is one etcd transaction (flowd.etcd_codec lays it out): it holds
only if the marker key is still at the revision this host's mirror has, so a
write computed on a lagging mirror is refused by etcd itself (StaleMirror:
the handler catches up and computes it again). Compare-and-set, the current
flow rules and name checks are therefore decided on the cluster's latest
state, whatever host serves the request. A watch thread follows the data
keys from the mirror's revision and hands other hosts' writes to the loop
(``take``; ``wake`` tells the loop there is something).

This module and flowd.etcd_adapter are the only ones that reach etcd; the
daemon imports this one only with ``--backend etcd``.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from flowd_client.errors import CompactedError, FlowdError, UnavailableError

from .backend import StaleMirror
from .etcd_adapter import EtcdAdapter
from .etcd_codec import Layout, Record, restamp
from .etcd_types import Compare
from .store import Store

log = logging.getLogger("flowd.etcd")
#: retry keys live this long in etcd (a lease is taken anew every LEASE_RENEW s)
LEASE_TTL = 600
LEASE_RENEW = 60.0
#: after a failed call, writes fail at once for this long instead of waiting again
FAIL_FAST = 0.5
#: each etcd call's deadline: a write fails well within a client's (5 s by default)
TIMEOUT = 1.5
#: keyed writes whose outcome is unknown (a timeout that may have committed)
MAX_DOUBTFUL = 10_000


class EtcdBackend:
    gapped = True
    one_write_per_group = True

    def __init__(self, endpoints: tuple[str, ...], prefix: str, *, timeout: float = TIMEOUT,
                 cacert: str | None = None, cert: str | None = None,
                 key: str | None = None) -> None:
        self.endpoints, self.prefix = endpoints, prefix
        self.cacert, self.cert, self.key = cacert, cert, key
        self.layout = Layout(prefix)
        self._adapter: EtcdAdapter | None = None
        self.timeout = timeout
        self.wake: Callable[[], None] = lambda: None
        self._queue: queue.Queue[list[Record]] = queue.Queue()
        #: records the watch brought beyond the one a write waited for (see before)
        self._held: list[Record] = []
        self.store = Store()
        self._lease: tuple[int, float] | None = None
        self._doubtful: OrderedDict[tuple[str, int], None] = OrderedDict()
        self.unavailable_since: float | None = None
        self._failed_at = 0.0
        self.last_error: str | None = None
        self.watch_revision = 0
        self.watch_error: str | None = None
        #: the watch's history was compacted past the mirror: reload the whole state
        self.needs_resync = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: Any = None

    # -- start and stop ------------------------------------------------------------

    @property
    def adapter(self) -> EtcdAdapter:
        if self._adapter is None:
            self._adapter = EtcdAdapter(list(self.endpoints), timeout=self.timeout,
                                        cacert=self.cacert, cert=self.cert, key=self.key)
        return self._adapter

    def load(self, store: Store) -> None:
        """Fill an empty store from etcd and follow the changes from there."""
        self.store = store
        record = self.snapshot_record(store)
        if record["rev"] > store.revision:
            store.apply_record(record, gapped=True)
        self.follow_from(record["read_at"] + 1)

    def follow_from(self, start: int) -> None:
        """Watch the data keys from revision ``start`` in a thread of its own."""
        self._thread = threading.Thread(target=self._follow, args=(start,),
                                        name="etcd-watch", daemon=True)
        self._thread.start()

    def snapshot_record(self, store: Store) -> Record:
        """The whole state in etcd now, as one record against ``store``: every flow
        put, every flow of the store that etcd lacks deleted (load and resync)."""
        got = self.adapter.range_prefix(self.layout.data)
        lay, flows, marker_rev, current, meta = self.layout, {}, 0, None, {}
        for kv in got.kvs:
            if kv.key.startswith(lay.flows):
                flows[kv.key[len(lay.flows):].decode()] = lay.flow_of(kv.value, kv.mod_revision)
            elif kv.key == lay.marker:
                marker_rev, meta = kv.mod_revision, json.loads(kv.value)
            elif kv.key == lay.current:
                current = kv.value.decode()
        changes: list[list[Any]] = [["delete_flow", fid, None] for fid in store.flows
                                    if fid not in flows]
        changes += [["update_flow", fid, f] for fid, f in flows.items()
                    if store.flows.get(fid) != f]
        return {"rev": marker_rev, "ts": meta.get("ts", ""), "changes": changes,
                "current": current if current in flows else next(iter(flows), None),
                "read_at": got.revision}

    def close(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.cancel()
        if self._adapter is not None:
            self._adapter.close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    # -- the watch thread ------------------------------------------------------------

    def _follow(self, start: int) -> None:
        """Other hosts' writes into the queue, resuming after every failure."""
        next_rev = start
        while not self._stop.is_set():
            try:
                self._watch = w = self.adapter.watch_prefix(self.layout.data, next_rev)
                for batch in w:
                    next_rev = w.next_revision
                    self.watch_revision, self.watch_error = batch.revision, None
                    records = self.layout.records_of(batch.events)
                    if records:
                        self._queue.put(records)
                        self.wake()
            except CompactedError as exc:
                self.watch_error = exc.message
                self.needs_resync = True
                self.wake()
                return
            except FlowdError as exc:
                next_rev = int(exc.data.get("next_revision", next_rev))
                self.watch_error = exc.message
                log.warning("etcd watch: %s", exc.message)
                self._stop.wait(0.2)
            except Exception:  # noqa: BLE001 - the thread must not die silently
                log.exception("etcd watch failed; starting it again")
                self._stop.wait(0.5)

    def take(self) -> list[Record]:
        """Records the watch brought since the last call."""
        out, self._held = self._held, []
        while True:
            try:
                out.extend(self._queue.get_nowait())
            except queue.Empty:
                return out

    def before(self, revision: int) -> list[Record] | None:
        """Other hosts' records before our write at ``revision``, to apply first (the
        mirror follows etcd's order). None if the watch did not reach it in time:
        then the watch brings our write too, in its turn."""
        try:
            got = self.catch_up(revision)
        except UnavailableError:
            self._held = self.take()
            return None
        self._held = [r for r in got if r["rev"] > revision]
        return [r for r in got if r["rev"] < revision]

    def catch_up(self, revision: int) -> list[Record]:
        """Records up to at least ``revision`` (waits for the watch, up to the timeout)."""
        out = self.take()
        deadline = time.monotonic() + self.timeout
        while not out or out[-1]["rev"] < revision:
            left = deadline - time.monotonic()
            if left <= 0:
                raise UnavailableError(
                    f"this host's mirror of etcd did not catch up to revision {revision} "
                    f"within {self.timeout} s (watch: {self.watch_error or 'no error'})",
                    {"reason": "mirror_behind"})
            try:
                out.extend(self._queue.get(timeout=left))
            except queue.Empty:
                continue
        return out

    # -- writes ---------------------------------------------------------------------

    def durable(self, records: list[Record], base_revision: int,
                sync: bool | None = None) -> tuple[list[int], int]:
        revs, written = [], 0
        for record in records:
            rev, size = self._commit(record, base_revision)
            revs.append(rev)
            written += size
            base_revision = rev
        return revs, written

    def _commit(self, record: Record, base_revision: int) -> tuple[int, int]:
        self._fail_fast()
        lease = self._lease_id() if record.get("keys") else 0
        compares, success, failure = self.layout.txn_for(record, self._compares(record), lease)
        try:
            res = self.adapter.txn(compares, success, failure)
        except FlowdError as exc:
            self._failed(exc, record)
            raise
        if self.unavailable_since is not None:
            log.warning("etcd reachable again (unreachable since %s)", self.since_text())
        self.unavailable_since, self.last_error = None, None
        if not res.succeeded:
            kvs = res.results[0].kvs if res.results else ()
            raise StaleMirror(kvs[0].mod_revision if kvs else 0)
        size = sum(len(getattr(op, "value", b"")) + len(op.key) for op in success)
        return res.revision, size

    def _compares(self, record: Record) -> list[Compare]:
        """What the write read, as the mirror has it: each flow it touches at the
        revision the mirror holds (0: absent), so if_revision and "no such flow" are
        decided on etcd's state. A write that depends on the whole store also needs
        the marker unchanged: deleting the current flow (the first remaining one
        becomes current) and a stray merge."""
        store, lay = self.store, self.layout
        out = []
        for fid in dict.fromkeys(fid for _op, fid, _flow in record["changes"]):
            flow = store.flows.get(fid)
            out.append(Compare.mod_revision(lay.flow_key(fid), flow["revision"] if flow else 0))
        moves_current = any(flow is None and fid == store.current_flow_id
                            for _op, fid, flow in record["changes"])
        if moves_current or "merge" in record:
            out.append(Compare.mod_revision(lay.marker, store.revision))
        return out

    def _fail_fast(self) -> None:
        if self.unavailable_since is not None and time.monotonic() - self._failed_at < FAIL_FAST:
            raise UnavailableError(f"etcd has been unreachable since {self.since_text()}: "
                                   f"{self.last_error}; retry later", {"reason": "unavailable"})

    def _failed(self, exc: FlowdError, record: Record) -> None:
        if isinstance(exc, UnavailableError):
            self._failed_at = time.monotonic()
            if self.unavailable_since is None:
                self.unavailable_since = time.time()
                log.warning("etcd unreachable, writes refused until it is back "
                            "(reads go on from this host's copy): %s", exc.message)
            self.last_error = exc.message
            if exc.data.get("maybe_applied"):
                for key, _result in record.get("keys", ()):
                    self._doubtful[tuple(key)] = None
                while len(self._doubtful) > MAX_DOUBTFUL:
                    self._doubtful.popitem(last=False)

    def _lease_id(self) -> int:
        now = time.monotonic()
        if self._lease is None or now - self._lease[1] >= LEASE_RENEW:
            try:
                self._lease = (self.adapter.grant_lease(LEASE_TTL).id, now)
            except FlowdError as exc:
                self._failed(exc, {})
                raise
        return self._lease[0]

    def lookup(self, key: tuple[str, int]) -> tuple[bool, Any, int] | None:
        """A keyed write whose first attempt may have committed: its reply from etcd."""
        if key not in self._doubtful:
            return None
        kv, _ = self.adapter.get(self.layout.retry_key(key))
        if kv is None:
            return None
        del self._doubtful[key]
        stored = json.loads(kv.value)
        return True, restamp(stored["result"], stored["stage"], kv.mod_revision), kv.mod_revision

    # -- status ----------------------------------------------------------------------

    def since_text(self) -> str | None:
        if self.unavailable_since is None:
            return None
        return datetime.fromtimestamp(self.unavailable_since).isoformat(timespec="seconds")

    def describe(self) -> dict[str, Any]:
        return {"kind": "etcd", "endpoints": self.endpoints, "prefix": self.prefix,
                "endpoint_in_use": self.adapter.endpoint,
                "unavailable_since": self.since_text(), "last_error": self.last_error,
                "watch_revision": self.watch_revision, "watch_error": self.watch_error,
                "needs_resync": self.needs_resync}
