"""The daemon's bounded memories: change history and retry keys."""

from __future__ import annotations

from typing import Any

import pytest
from flowd_client.errors import CompactedError
from flowd_client.protocol import pack, packed_array, packed_map

from flowd import ops
from flowd.history import EVENT_OVERHEAD, History, build_event
from flowd.retry_keys import KEY_OVERHEAD, RetryKeys
from flowd.store import Store


def event(rev: int) -> dict:
    return {"revision": rev, "ts": "", "current_flow_id": None, "changes": []}


def test_history_replays_after_a_revision_and_compacts() -> None:
    h = History(3, start_revision=10)
    assert h.since(10) == []
    for rev in range(11, 16):
        h.add(event(rev))
    assert [e["revision"] for e in h.since(12)] == [13, 14, 15]
    assert h.since(12) == [event(r) for r in (13, 14, 15)]  # kept packed, given back whole
    assert h.since(15) == []
    with pytest.raises(CompactedError) as err:
        h.since(11)
    assert err.value.data["compacted_revision"] == 12


def test_a_history_page_goes_out_as_kept_the_bytes_of_packing_it_decoded() -> None:
    """The daemon answers ``history`` with its kept events as they are: to a client
    that is the very reply packing the decoded events made, floats and big ints too."""
    h = History(100, start_revision=0)
    for rev in range(1, 40):
        h.add({**event(rev), "changes": [{"op": "add_flow", "flow_id": f"f{rev}", "flow": {
            "id": f"f{rev}", "name": "한글" * rev, "plans": [{"x": rev / 3, "big": 2**63}]}}]})
    for since in (0, 17, 38):
        page = packed_map({"changes": packed_array(h.since_packed(since)),
                           "revision": pack(39)})
        assert bytes(page) == pack({"changes": h.since(since), "revision": 39})
        assert len(h.since_packed(since)) == 39 - since


def test_retry_keys_keep_the_first_reply_whole() -> None:
    keys = RetryKeys()
    keys.put(("c", 1), True, "flow_1", 7)
    keys.put(("c", 2), False, ValueError("x"))
    assert keys.get(("c", 1)) == (True, "flow_1", 7)
    assert keys.get(("c", 2))[0] is False
    assert keys.get(("c", 3)) is None


def test_retry_keys_are_bounded_by_count_and_by_bytes() -> None:
    by_count = RetryKeys(size=3)
    for i in range(5):
        by_count.put(("c", i), True, i)
    assert [k[1] for k in by_count.replies] == [2, 3, 4]
    big = {"id": "f", "plans": [{"text": "x" * 1000}] * 40}  # a returned flow, ~40 KB packed
    size = len(pack(big)) + KEY_OVERHEAD
    by_bytes = RetryKeys(size=1000, max_bytes=2 * size + 100)
    for i in range(5):
        by_bytes.put(("c", i), True, big)
    assert len(by_bytes.replies) == 2 and by_bytes.bytes == 2 * size
    assert by_bytes.get(("c", 4)) == (True, big, None)  # kept packed, answered whole
    by_bytes.put(("c", 4), True, "small")  # replacing a key gives its bytes back
    assert by_bytes.bytes == size + len(pack("small")) + KEY_OVERHEAD


def test_history_is_bounded_by_bytes_and_pages_its_replies() -> None:
    plans = [{"text": "y" * 10_000}]
    one = len(pack(big_event(1, plans))) + EVENT_OVERHEAD
    h = History(1000, start_revision=0, max_bytes=3 * one + 10, page_bytes=one + 10)
    for rev in range(1, 6):
        h.add(big_event(rev, plans))
    assert [rev for rev, _ in h.events] == [3, 4, 5]
    assert h.bytes <= 3 * one + 10 and h.floor == 2
    page = h.since(2)
    assert [e["revision"] for e in page] == [3]  # a page ends at page_bytes (>= one event)
    assert [e["revision"] for e in h.since(3)] == [4]
    with pytest.raises(CompactedError):
        h.since(1)


def test_an_event_bigger_than_the_history_bound_is_not_kept() -> None:
    h = History(1000, start_revision=0, max_bytes=1000)
    packed = h.add(big_event(1, [{"text": "z" * 5000}]))
    assert len(packed) > 1000 and not h.events and h.bytes == 0 and h.floor == 1


def big_event(rev: int, plans: list) -> dict:
    return {"revision": rev, "ts": "", "current_flow_id": "f",
            "changes": [{"op": "update_flow", "flow_id": "f", "flow": {"id": "f", "plans": plans}}]}


def test_a_merge_event_carries_its_report_next_to_the_flow_changes() -> None:
    """Watchers and the mirror read ``changes`` as for any write; the merge report rides
    along, also when the merge changed no flow (a revision of its own all the same)."""
    from flowd_client.model import changes_of

    from flowd.history import build_event
    from flowd.store import Store

    store = Store()
    flow = {"id": "f1", "name": "n", "plans": [], "created": "c", "updated": "u",
            "revision": 1}
    report = {"added": 1, "conflict_ids": [], "skipped_deletion_ids": ["f9"]}
    record = {"rev": 1, "ts": "t", "changes": [["merge_add", "f1", flow]], "current": "f1",
              "merge": report}
    store.apply_record(record)
    event = build_event(record, store)
    assert event["merge"] == report
    assert [(c.op, c.flow_id) for c in changes_of(event)] == [("merge_add", "f1")]
    empty = {"rev": 2, "ts": "t", "changes": [], "current": "f1", "merge": report}
    store.apply_record(empty)
    assert changes_of(build_event(empty, store)) == [] and store.revision == 2


def _applied(store: Store, op: str, **args: Any) -> dict[str, Any]:
    txn = store.begin()
    ops.WRITES[op](txn, args)
    record = txn.record()
    assert record is not None
    store.apply_record(record)
    return record


def test_a_set_current_in_an_event_carries_its_flow_as_the_record_left_it() -> None:
    s = Store()
    added = build_event(_applied(s, "add_flow", name="a", plans=[{"t": 1}]), s)
    fid = s.current_flow_id
    assert fid is not None
    assert [c["op"] for c in added["changes"]] == ["add_flow", "set_current"]
    assert [c["flow"] for c in added["changes"]] == [s.flows.get(fid)] * 2
    _applied(s, "add_flow", name="b")
    alone = build_event(_applied(s, "set_current", flow_id=fid), s)
    assert alone["changes"][0]["flow"] == s.flows.get(fid)  # the store's: no write here
    # a batch that updates the flow after making it current: the last write is "now"
    batch = build_event(_applied(s, "batch", ops=[
        {"op": "update_flow", "args": {"flow_id": fid, "name": "first"}},
        {"op": "set_current", "args": {"flow_id": fid}},
        {"op": "update_flow", "args": {"flow_id": fid, "name": "last"}}]), s)
    now = s.flows.get(fid)
    assert now["name"] == "last"
    assert [c["flow"]["name"] for c in batch["changes"]] == ["first", "last", "last"]
    assert batch["changes"][1]["flow"] == now
