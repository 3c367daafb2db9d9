"""How flowd's records sit in etcd, and back: keys, values, one revision per write.

Pure (no grpc): the backend builds transactions from it and the watch's
events are turned back into records here, so the layout is tested alone.

Under the prefix P (``--etcd-prefix``):

- ``P/data/flows/<id>``: a flow as JSON; its ``revision`` is the key's
  ``mod_revision`` (the value's own is ignored);
- ``P/data/current``: the current flow's id (absent: none);
- ``P/data/marker``: written by every flowd transaction, so its
  ``mod_revision`` is the store's revision; a write that depends on the
  whole store (deleting the current flow picks the first remaining one; a
  stray merge) compares it, so it holds only if no other write came between
  (one key, where a range compare costs O(keys) in etcd). Its value is the
  record without the flows: ``{"ts", "ops": [[op, id], ...], "current"[, "merge"]}``;
- ``P/retry/<client>/<n>``: the first reply of a keyed write, under a lease.
"""

from __future__ import annotations

import json
from typing import Any

from flowd_client.errors import InvalidArgumentError, TooLargeError

from .etcd_types import Compare, Delete, Get, Put, TxnOp, WatchEvent

#: etcd's default --max-txn-ops: the bound on each branch of a transaction
MAX_TXN_OPS = 128
Record = dict[str, Any]


def _dumps(value: Any) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"a value cannot be stored in etcd as JSON: {exc}") from exc


class Layout:
    """The keys of one flowd store (one prefix) in etcd."""

    def __init__(self, prefix: str) -> None:
        base = prefix.rstrip("/").encode()
        self.data = base + b"/data/"
        self.flows = self.data + b"flows/"
        self.current = self.data + b"current"
        self.marker = self.data + b"marker"
        self.retry = base + b"/retry/"

    def flow_key(self, fid: str) -> bytes:
        return self.flows + fid.encode()

    def retry_key(self, key: tuple[str, int]) -> bytes:
        return self.retry + f"{key[0]}/{key[1]}".encode()

    # -- writes ------------------------------------------------------------------

    def txn_for(self, record: Record, compares: list[Compare],
                lease: int) -> tuple[list[Compare], list[TxnOp], list[TxnOp]]:
        """One flowd write as one etcd transaction, valid only if ``compares`` hold
        (the keys it read are as the mirror has them); the failure branch reads the
        marker, the revision to catch up to."""
        final: dict[str, Any] = {}
        ops = []
        for op, fid, flow in record["changes"]:
            ops.append([op, fid])
            if op != "set_current":
                final[fid] = flow
        success: list[TxnOp] = [
            Put(self.flow_key(fid), _dumps(flow)) if flow is not None
            else Delete(self.flow_key(fid)) for fid, flow in final.items()]
        cur = record["current"]
        success.append(Put(self.current, cur.encode()) if cur is not None
                       else Delete(self.current))
        marker: dict[str, Any] = {"ts": record["ts"], "ops": ops, "current": cur}
        if "merge" in record:
            marker["merge"] = record["merge"]
        success.append(Put(self.marker, _dumps(marker)))
        for key, result in record.get("keys", ()):
            success.append(Put(self.retry_key(tuple(key)),
                               _dumps({"stage": record["rev"], "result": result}), lease))
        if len(success) > MAX_TXN_OPS:
            raise TooLargeError(
                f"this write needs {len(success)} etcd operations (one per flow it changes, "
                f"plus {len(success) - len(final)}); etcd allows {MAX_TXN_OPS} per transaction "
                "(--max-txn-ops): split the batch", {"operations": len(success),
                                                     "max_txn_ops": MAX_TXN_OPS})
        return compares, success, [Get(self.marker)]

    # -- reads -------------------------------------------------------------------

    def flow_of(self, value: bytes, revision: int) -> dict[str, Any]:
        flow = json.loads(value)
        flow["revision"] = revision
        return dict(flow)

    def records_of(self, events: tuple[WatchEvent, ...]) -> list[Record]:
        """The flowd records in a watch batch (whole revisions, oldest first); a
        revision without a marker was not written by flowd and is passed over."""
        by_rev: dict[int, list[WatchEvent]] = {}
        for ev in events:
            by_rev.setdefault(ev.mod_revision, []).append(ev)
        out = []
        for rev, evs in by_rev.items():
            marker = next((e for e in evs if e.key == self.marker and e.kind == "put"), None)
            if marker is None:
                continue
            meta = json.loads(marker.value)
            flows = {e.key[len(self.flows):].decode(): (
                self.flow_of(e.value, rev) if e.kind == "put" else None)
                for e in evs if e.key.startswith(self.flows)}
            record: Record = {"rev": rev, "ts": meta["ts"], "current": meta["current"],
                              "changes": [[op, fid, None if op == "set_current"
                                           else flows.get(fid)] for op, fid in meta["ops"]]}
            if "merge" in meta:
                record["merge"] = meta["merge"]
            out.append(record)
        return out


def restamp(value: Any, staged: int, revision: int) -> Any:
    """A stored first reply with the staged revision of its flows replaced by the one
    etcd gave the write (the reply was written in the same transaction, before it)."""
    if isinstance(value, list):
        return [restamp(v, staged, revision) for v in value]
    if isinstance(value, dict):
        out = {k: restamp(v, staged, revision) for k, v in value.items()}
        if "id" in out and out.get("revision") == staged:
            out["revision"] = revision
        return out
    return value
