"""The in-memory store: the flows (as their lines of flows.json), the current id,
and the revision.

No I/O. A flow is held as the bytes of its line (:mod:`flowd.flow_lines`),
immutable: every change stores a new line, so a snapshot writer may hold
the old ones while the loop goes on (copy-on-write at flow granularity, no
copy of the store), and reading a flow gives the caller a fresh dict.

Writes go through a :class:`Txn` that stages changes in an overlay; the store
itself only changes in :meth:`Store.apply_record`, which is also what journal
replay calls. A record is the physical change (flows as written), so replay
is deterministic: no ids or clocks are regenerated.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from datetime import datetime
from itertools import compress
from typing import Any

from flowd_client.errors import InternalError

from . import flow_lines
from .flow_lines import Flow, FlowTable
from .names_index import NamesIndex

Record = dict[str, Any]
COMPACT_AFTER = 1024
#: ids need uniqueness (checked against the store), not secrecy: a seeded PRNG
#: instead of os.urandom per id (that syscall was 6% of the loop under 8 writers)
_ids = random.Random(os.urandom(16))
#: what the names index is keyed by (a test makes every name collide)
name_key = flow_lines.name_key
#: loaded flows indexed by name per loop turn after a load (1-3 ms of the loop)
INDEX_STEP = 4096


def now_iso() -> str:
    """Local naive ISO 8601 with microseconds, the seed's timestamp format."""
    return datetime.now().isoformat(timespec="microseconds")


class Store:
    """The only copy of the flows; mutated by records, read directly."""

    def __init__(self) -> None:
        self.flows = FlowTable()
        self.current_flow_id: str | None = None
        self.revision = 0
        #: hash of a name -> the ids of the flows so named, in the order they got it
        self.names = NamesIndex()
        #: a load's flows to index by name (from ``_at`` on; see _start_index): the
        #: ``_loaded`` flows of the load (the loader's keys of them), then those named
        #: since (``_last``: where each was named last; ``_touched``: loaded ones among them)
        self._pending: list[str] | None = None
        self._keys: Sequence[int] | None = None
        self._at = self._loaded = 0
        self._touched: set[str] = set()
        self._last: dict[str, int] = {}
        #: unknown top-level and meta keys of flows.json, written back unchanged
        self.extra: dict[str, Any] = {}
        self.meta_extra: dict[str, Any] = {}
        self._deleted = 0
        #: (id, line or None) per change since the snapshot writer last took them
        #: (flowd.snapshotter keeps a replica; None: nobody does, nothing is logged)
        self.changes: list[tuple[str, bytes | None]] | None = None
        #: bumped by every load: a replica of an earlier store is void
        self.generation = 0

    # ------------------------------------------------------------ loading

    def load(self, doc: dict[str, Any]) -> None:
        """Adopt a normalized schema-3.0 document: its flows as dicts (each encoded into
        its line), or as the lines of flowd's own file (a FlowTable, taken as it is)."""
        flows = doc["flows"]
        if isinstance(flows, FlowTable):
            self.flows = flows
        else:
            encode = flow_lines.encode
            self.flows = FlowTable({fid: encode(fid, f) for fid, f in flows.items()})
        self.changes, self.generation = None, self.generation + 1
        meta = doc.get("meta") or {}
        self.revision = int(meta.get("revision", 0))
        self.meta_extra = {k: v for k, v in meta.items() if k not in flow_lines.FILE_META}
        self.extra = {k: v for k, v in doc.items()
                      if k not in ("version", "meta", "current_flow_id", "flows")}
        cur = doc.get("current_flow_id")
        self.current_flow_id = cur if cur in self.flows else next(iter(self.flows), None)
        self._start_index()

    def _start_index(self) -> None:
        """Index the loaded flows' names after the daemon is ready, :data:`INDEX_STEP`
        at a time (:meth:`index_step`, a loop turn each): at once, at 1M flows, it held
        the start for ~1 s. Until it is complete, :meth:`find_by_name` completes it
        first; a flow written meanwhile is indexed behind the loaded ones, by the name
        its line has then, so the index keeps the order in which flows got their names."""
        table = self.flows
        self._keys, table.name_keys = table.name_keys, None
        self._touched, self._last, self._at = set(), {}, 0
        self.names = NamesIndex(len(table.lines))
        self._pending = list(table.lines) if table.lines else None
        self._loaded = len(table.lines)

    @property
    def indexing(self) -> bool:
        """Loaded flows are still to be indexed by name."""
        return self._pending is not None

    @property
    def unindexed(self) -> int:
        """How many flows the names index has still to take in (``stats``)."""
        return 0 if self._pending is None else len(self._pending) - self._at

    def index_step(self, count: int | None = None) -> None:
        """Index the next ``count`` pending flows (all of them: None)."""
        pending = self._pending
        if pending is None:
            return
        at, loaded = self._at, self._loaded
        end = len(pending) if count is None else min(len(pending), at + count)
        if at < loaded:  # the loaded flows (those written since wait behind them)
            upto = min(end, loaded)
            ids = pending[at:upto]
            keys = None if self._keys is None else self._keys[at:upto]
            touched = self._touched
            if touched and not touched.isdisjoint(ids):
                held = [fid not in touched for fid in ids]
                ids = list(compress(ids, held))
                keys = None if keys is None else list(compress(keys, held))
            self._index_loaded(ids, keys)
        lines, last = self.flows.lines, self._last
        for pos in range(max(at, loaded), end):  # named since the load, where last named
            fid = pending[pos]
            line = lines.get(fid)
            if line is not None and last[fid] == pos:
                self._index(flow_lines.name_of(fid, line), fid)
        self._at = end
        if end == len(pending):
            self._pending = self._keys = None
            self._touched, self._last = set(), {}

    def _index_later(self, fid: str, present: bool) -> None:
        """A flow that got a name (or lost it) while a load is being indexed: indexed behind
        the flows pending, where it got the name, as the index would have it at once."""
        pending = self._pending
        assert pending is not None
        self._touched.add(fid)  # not at its place among the loaded flows
        if present:
            self._last[fid] = len(pending)
            pending.append(fid)

    def _index_loaded(self, ids: list[str], keys: Sequence[int] | None) -> None:
        """Index loaded flows, by the keys the loader read (None: read from the lines)."""
        if keys is None:
            lines, name_of = self.flows.lines, flow_lines.name_of
            keys = [name_key(name_of(fid, lines[fid])) for fid in ids]
        self.names.fill(keys, ids)

    def _index(self, name: str, fid: str) -> None:
        self.names.add(name_key(name), fid)

    def _unindex(self, name: str, fid: str) -> None:
        self.names.remove(name_key(name), fid)

    # ------------------------------------------------------------ reads

    def get(self, flow_id: str) -> Flow | None:
        flow: Flow | None = self.flows.get(flow_id)
        return flow

    def find_by_name(self, name: str) -> list[Flow]:
        self.index_step()
        ids = self.names.ids(name_key(name))
        lines, name_of = self.flows.lines, flow_lines.name_of
        return [self.flows[fid] for fid in ids if name_of(fid, lines[fid]) == name]

    def __len__(self) -> int:
        return len(self.flows)

    # ------------------------------------------------------------ writes

    def begin(self, parent: Txn | None = None) -> Txn:
        """Start a transaction over the store (or over a parent's staged state)."""
        return Txn(self, parent)

    def apply_record(self, record: Record, gapped: bool = False) -> None:
        """Apply one committed record: the only place the store changes. ``gapped``:
        revisions are the store of record's (etcd), increasing but not by one."""
        rev = record["rev"]
        if rev <= self.revision if gapped else rev != self.revision + 1:
            raise InternalError(f"record revision {rev} does not follow {self.revision}")
        lines, log = self.flows.lines, self.changes
        for op, fid, flow in record["changes"]:
            if op == "set_current":
                continue
            line = None if flow is None else flow_lines.encode(fid, flow)
            if log is not None:
                log.append((fid, line))
            old = lines.get(fid)
            old_name = None if old is None else flow_lines.name_of(fid, old)
            renamed = flow is None or old_name != flow["name"]
            if old_name is not None and renamed:
                self._unindex(old_name, fid)
            if line is None:
                if lines.pop(fid, None) is not None:
                    self._deleted += 1
            else:
                lines[fid] = line
            if not renamed:
                continue
            if self._pending is None:
                if line is not None:
                    self._index(flow["name"], fid)
            else:
                self._index_later(fid, line is not None)
        self.current_flow_id = record["current"]
        self.revision = rev
        if self._deleted > COMPACT_AFTER and self._deleted > len(lines):
            self._compact()

    def _compact(self) -> None:
        """Rebuild the dict once deleted slots outnumber flows.

        CPython keeps a deleted key's slot until the dict is resized, and
        iteration walks past them: "first remaining flow" (the seed's rule on
        deleting the current flow) would grow O(deletions). Amortized O(1).
        """
        self.flows.lines = dict(self.flows.lines)
        self._deleted = 0


class Txn:
    """Staged changes, read through to a parent and the store; becomes one record.

    A request's Txn sits on the group's Txn so that writes arriving in the same
    group commit see each other before anything is durable or applied.
    """

    def __init__(self, store: Store, parent: Txn | None = None) -> None:
        self.store = store
        self.parent = parent
        self.pending: dict[str, Flow | None] = {}
        self.added: dict[str, None] = {}
        self.changes: list[list[Any]] = []
        self.current: str | None = parent.current if parent else store.current_flow_id
        self.rev: int = parent.next_rev if parent else store.revision + 1
        self.next_rev: int = self.rev
        self._ts: str | None = None

    @property
    def ts(self) -> str:
        """The time this transaction stamps, taken when first needed (a group's own is
        never needed; not a cached_property: on 3.11 that takes a lock every write)."""
        ts = self._ts
        if ts is None:
            ts = self._ts = now_iso()
        return ts

    # ------------------------------------------------------------ reads

    def get(self, flow_id: str) -> Flow | None:
        if flow_id in self.pending:
            return self.pending[flow_id]
        if self.parent is not None:
            return self.parent.get(flow_id)
        flow: Flow | None = self.store.flows.get(flow_id)
        return flow

    def _exists(self, flow_id: str) -> bool:
        txn: Txn | None = self
        while txn is not None:
            if flow_id in txn.pending:
                return txn.pending[flow_id] is not None
            txn = txn.parent
        return flow_id in self.store.flows.lines

    def _new_ids(self) -> Iterator[str]:
        if self.parent is not None:
            yield from self.parent._new_ids()
        yield from self.added

    def first_remaining(self) -> str | None:
        """First flow in creation order that is still there after staged deletes."""
        for fid in self.store.flows.lines:
            if self._exists(fid):
                return fid
        for fid in self._new_ids():
            if self._exists(fid):
                return fid
        return None

    def new_id(self) -> str:
        for _ in range(64):
            fid = f"flow_{_ids.getrandbits(32):08x}"
            if not self._exists(fid):
                return fid
        raise InternalError("could not find a free flow id")

    # ------------------------------------------------------------ writes

    def put(self, op: str, flow: Flow) -> Flow:
        fid = flow["id"]
        if not self._exists(fid):
            self.added[fid] = None
        self.pending[fid] = flow
        self.changes.append([op, fid, flow])
        return flow

    def delete(self, op: str, flow_id: str) -> None:
        self.pending[flow_id] = None
        self.changes.append([op, flow_id, None])
        if self.current == flow_id:
            self.current = self.first_remaining()

    def mark_current(self, flow_id: str) -> None:
        self.current = flow_id
        self.changes.append(["set_current", flow_id, None])

    def stamp(self, flow: Flow) -> Flow:
        """Set the fields every mutation sets (``updated``, ``revision``)."""
        flow["updated"] = self.ts
        flow["revision"] = self.rev
        return flow

    # ------------------------------------------------------------ commit

    def record(self) -> Record | None:
        """The record this transaction stands for, or None if it changed nothing."""
        if not self.changes:
            return None
        return {"rev": self.rev, "ts": self.ts, "changes": self.changes,
                "current": self.current}

    def merge_into_parent(self) -> None:
        """Fold a finished child into its parent (the group), consuming one revision."""
        parent = self.parent
        assert parent is not None
        parent.pending.update(self.pending)
        for fid in self.added:
            parent.added[fid] = None
        parent.current = self.current
        parent.next_rev = self.rev + 1
