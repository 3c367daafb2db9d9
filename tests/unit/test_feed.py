"""The daemon's bounded memories: change history and retry keys."""

from __future__ import annotations

import pytest
from flowd_client.errors import CompactedError

from flowd.feed import History, RetryKeys


def event(rev: int) -> dict:
    return {"revision": rev, "ts": "", "current_flow_id": None, "changes": []}


def test_history_replays_after_a_revision_and_compacts() -> None:
    h = History(3, start_revision=10)
    assert h.since(10) == []
    for rev in range(11, 16):
        h.add(event(rev))
    assert [e["revision"] for e in h.since(12)] == [13, 14, 15]
    assert h.since(15) == []
    with pytest.raises(CompactedError) as err:
        h.since(11)
    assert err.value.data["compacted_revision"] == 12


def test_retry_keys_keep_the_first_reply_whole() -> None:
    keys = RetryKeys()
    keys.put(("c", 1), True, "flow_1", 7)
    keys.put(("c", 2), False, ValueError("x"))
    assert keys.get(("c", 1)) == (True, "flow_1", 7)
    assert keys.get(("c", 2))[0] is False
    assert keys.get(("c", 3)) is None


def test_retry_keys_are_bounded_by_count_and_by_what_replies_pin() -> None:
    by_count = RetryKeys(size=3)
    for i in range(5):
        by_count.put(("c", i), True, i)
    assert [k[1] for k in by_count.replies] == [2, 3, 4]
    big = {"id": "f", "plans": [{}] * 40}  # a returned flow pins its plans list
    by_weight = RetryKeys(size=1000, max_weight=100)
    for i in range(5):
        by_weight.put(("c", i), True, big)
    assert len(by_weight.replies) == 2 and by_weight.weight == 82
    by_weight.put(("c", 4), True, "small")  # replacing a key gives its weight back
    assert by_weight.weight == 42


def test_a_merge_event_carries_its_report_next_to_the_flow_changes() -> None:
    """Watchers and the mirror read ``changes`` as for any write; the merge report rides
    along, also when the merge changed no flow (a revision of its own all the same)."""
    from flowd_client.model import changes_of

    from flowd.feed import build_event
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
