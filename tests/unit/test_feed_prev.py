"""Gap detection when revisions skip numbers (a daemon on etcd): events carry ``prev``."""

from __future__ import annotations

from flowd_client.feed import Sequencer
from flowd_client.protocol import build_event


def event(rev: int, prev: int | None = None) -> dict:
    e = build_event(rev, "ts", "f", [("update_flow", "f", {"id": "f", "name": "n",
                                                           "plans": [], "revision": rev})])
    if prev is not None:
        e["prev"] = prev
    return e


def test_without_prev_the_next_revision_is_the_one_after() -> None:
    seq = Sequencer(5)
    assert seq.accept(event(7)) is None  # 6 is missing
    assert [c.revision for c in seq.accept(event(6))] == [6]


def test_with_prev_a_skip_in_numbers_is_no_gap_but_a_missed_event_is() -> None:
    seq = Sequencer(10)
    assert [c.revision for c in seq.accept(event(14, prev=10))] == [14]
    assert seq.accept(event(20, prev=17)) is None  # the event at 17 was not seen
    assert seq.accept(event(14, prev=10)) == []  # already delivered
    assert [c.revision for c in seq.accept(event(17, prev=14))] == [17]


def test_a_since_between_two_revisions_of_the_feed_is_no_gap() -> None:
    seq = Sequencer(12)  # e.g. a revision a read returned, no event of its own
    assert [c.revision for c in seq.accept(event(14, prev=10))] == [14]
