"""flowd's layout in etcd, without etcd: a write's transaction and its way back."""

from __future__ import annotations

import pytest
from flowd_client.errors import InvalidArgumentError, TooLargeError

from flowd.etcd_codec import MAX_TXN_OPS, Layout, restamp
from flowd.etcd_types import Compare, Delete, Put, WatchEvent

LAY = Layout("/flowd/t/")


def record(changes, current, rev=5, **more):
    return {"rev": rev, "ts": "2026-01-01T00:00:00.000000", "changes": changes,
            "current": current, **more}


def as_events(success, revision: int) -> tuple[WatchEvent, ...]:
    """What etcd's watch would deliver for a transaction's success branch."""
    out = []
    for op in success:
        if isinstance(op, Put):
            out.append(WatchEvent("put", op.key, op.value, revision, revision, 1))
        elif isinstance(op, Delete):
            out.append(WatchEvent("delete", op.key, b"", 0, revision, 0))
    return tuple(out)


def test_a_write_round_trips_through_its_watch_events() -> None:
    flow = {"id": "f1", "name": "n", "plans": [], "revision": 5}
    rec = record([["add_flow", "f1", flow], ["set_current", "f1", None],
                  ["delete_flow", "f0", None]], "f1", keys=[[["c", 1], "f1"]])
    cmp = [Compare.mod_revision(LAY.flow_key("f1"), 0)]
    compares, success, failure = LAY.txn_for(rec, cmp, lease=7)
    assert compares == cmp and failure[0].key == LAY.marker
    retry = [op for op in success if op.key.startswith(LAY.retry)]
    assert len(retry) == 1 and retry[0].lease == 7  # the first reply, under the lease
    (back,) = LAY.records_of(as_events(success, 42))
    assert back["rev"] == 42 and back["current"] == "f1"
    assert [c[:2] for c in back["changes"]] == [c[:2] for c in rec["changes"]]
    assert back["changes"][0][2] == {**flow, "revision": 42}
    assert back["changes"][2][2] is None


def test_a_flow_changed_twice_in_a_batch_is_one_put() -> None:
    rec = record([["add_flow", "f", {"id": "f", "v": 1}],
                  ["update_flow", "f", {"id": "f", "v": 2}]], "f")
    _, success, _ = LAY.txn_for(rec, [], 0)
    puts = [op for op in success if op.key == LAY.flow_key("f")]
    assert len(puts) == 1 and b'"v":2' in puts[0].value


def test_a_revision_flowd_did_not_write_is_passed_over() -> None:
    ev = WatchEvent("put", LAY.flow_key("x"), b"{}", 3, 3, 1)
    assert LAY.records_of((ev,)) == []


def test_over_max_txn_ops_is_too_large_before_anything_is_sent() -> None:
    changes = [["add_flow", f"f{i}", {"id": f"f{i}"}] for i in range(MAX_TXN_OPS)]
    with pytest.raises(TooLargeError, match="max-txn-ops"):
        LAY.txn_for(record(changes, "f0"), [], 0)


def test_a_value_json_cannot_hold_is_refused() -> None:
    with pytest.raises(InvalidArgumentError):
        LAY.txn_for(record([["add_flow", "f", {"id": "f", "b": b"\0"}]], "f"), [], 0)


def test_restamp_puts_etcd_s_revision_on_the_flows_of_a_stored_reply() -> None:
    reply = [{"id": "a", "revision": 9, "plans": [{"id": "p", "revision": 1}]}, True]
    assert restamp(reply, 9, 120) == [{"id": "a", "revision": 120,
                                       "plans": [{"id": "p", "revision": 1}]}, True]
