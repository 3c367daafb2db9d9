"""No reply shows a write that is not yet durable (in process, one group at a time).

A group commit stages writes before their fsync. A refusal computed against
those staged writes (a conflict with a staged revision, NOT_FOUND for a flow a
staged write deleted, a failed batch check, an id a staged add took) must wait
for the group's fsync like the writes do, come out after them in order, and
never report a revision whose append failed. A refusal the committed store
alone explains goes out at once.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
from flowd_client.protocol import unpack
from test_faults import Harness, fault


@pytest.fixture
def h(tmp_path: Path):
    harness = Harness(tmp_path / "data")
    yield harness
    if harness.rt.lock.file is not None:
        harness.rt.close()


def early(h: Harness) -> list[dict[str, Any]]:
    """Replies handle() sent at once, before the group's commit."""
    return [unpack(frame) for _, frame in h.early]


def commit_in_order(h: Harness) -> list[dict[str, Any]]:
    replies = [unpack(frame) for _, frame in h.rt.service.commit()]
    h.early = []
    return replies


def code(reply: dict[str, Any]) -> str | None:
    return reply.get("error", {}).get("code")


def test_conflict_with_a_staged_write_waits_for_its_fsync(h: Harness) -> None:
    fid = h.add("a")
    rev = h.rt.store.flows[fid]["revision"]
    w = h.send("update_flow", {"flow_id": fid, "name": "b"}, client=b"w")
    assert early(h) == []
    cas = h.send("update_flow", {"flow_id": fid, "name": "c", "if_revision": rev}, client=b"c")
    assert early(h) == [], "the conflict was answered before the write it saw was durable"
    replies = commit_in_order(h)
    assert [r["id"] for r in replies] == [w, cas]
    assert "result" in replies[0]
    assert code(replies[1]) == "CONFLICT"
    assert replies[1]["error"]["data"]["current_revision"] == replies[0]["rev"]


def test_failed_fsync_never_reports_the_abandoned_revision(h: Harness) -> None:
    fid = h.add("a")
    rev = h.rt.store.flows[fid]["revision"]
    with fault("fdatasync", err=errno.EIO):
        h.send("update_flow", {"flow_id": fid, "name": "b"}, client=b"w")
        h.send("update_flow", {"flow_id": fid, "name": "c", "if_revision": rev}, client=b"c")
        assert early(h) == []
        replies = commit_in_order(h)
    assert [code(r) for r in replies] == ["UNAVAILABLE", "UNAVAILABLE"]
    assert all("current_revision" not in str(r) for r in replies)
    assert h.rt.store.flows[fid]["revision"] == rev
    # the refusal was never final: the same CAS now succeeds against what is durable
    again = h.call("update_flow", {"flow_id": fid, "name": "c", "if_revision": rev})
    assert "result" in again, again


@pytest.mark.parametrize("case", ["deleted", "batch-check", "taken-id", "plan-index"])
def test_every_refusal_that_saw_staged_state_waits(h: Harness, case: str) -> None:
    fid = h.add("a")
    rev = h.rt.store.flows[fid]["revision"]
    if case == "deleted":
        h.send("delete_flow", {"flow_id": fid})
        refused = ("update_flow", {"flow_id": fid, "name": "x"}, "NOT_FOUND")
    elif case == "batch-check":
        h.send("update_flow", {"flow_id": fid, "name": "b"})
        refused = ("batch", {"ops": [{"op": "check", "args": {"flow_id": fid, "revision": rev}},
                                     {"op": "add_flow", "args": {"name": "z"}}]}, "CONFLICT")
    elif case == "taken-id":
        h.send("add_flow", {"name": "n", "flow_id": "flow_fixed01"})
        refused = ("add_flow", {"name": "m", "flow_id": "flow_fixed01"}, "CONFLICT")
    else:
        h.call("update_flow", {"flow_id": fid, "plans": [{"id": 1}]})
        h.send("update_flow", {"flow_id": fid, "plans": []}, client=b"w2")
        refused = ("remove_plan", {"flow_id": fid, "index": 0}, "NOT_FOUND")
    op, args, want = refused
    rid = h.send(op, args, client=b"late")
    assert early(h) == []
    replies = commit_in_order(h)
    assert replies[-1]["id"] == rid and code(replies[-1]) == want


def test_refusal_from_committed_state_goes_out_at_once(h: Harness) -> None:
    a, b = h.add("a"), h.add("b")
    rev_b = h.rt.store.flows[b]["revision"]
    h.call("update_flow", {"flow_id": b, "name": "b2"})
    h.send("update_flow", {"flow_id": a, "name": "a2"}, client=b"w")  # staged, unrelated
    rid = h.send("update_flow", {"flow_id": b, "name": "x", "if_revision": rev_b},
                 client=b"c")
    now = early(h)
    assert [r["id"] for r in now] == [rid] and code(now[0]) == "CONFLICT"
    h.send("get_flow", {"flow_id": "nope"}, client=b"r", write=False)
    assert early(h)[0]["result"] is None  # reads never wait


def test_a_retry_of_a_waiting_refusal_gets_the_same_answer(h: Harness) -> None:
    fid = h.add("a")
    rev = h.rt.store.flows[fid]["revision"]
    h.send("update_flow", {"flow_id": fid, "name": "b"}, client=b"w")
    key = ("retrying-client", 1)
    args = {"flow_id": fid, "name": "c", "if_revision": rev}
    first = h.send("update_flow", args, client=b"c", key=key)
    second = h.send("update_flow", args, client=b"c2", key=key)
    assert early(h) == []
    replies = {r["id"]: r for r in commit_in_order(h)}
    assert code(replies[first]) == code(replies[second]) == "CONFLICT"
    third = h.send("update_flow", args, client=b"c3", key=key)
    assert early(h)[0]["id"] == third and code(early(h)[0]) == "CONFLICT"
