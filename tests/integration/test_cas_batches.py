"""Issue 4 through real daemons: compare-and-set, plan operations, batches.

The store's rules themselves (every index and id case, all-or-nothing, what a
check sees) are asserted in tests/unit/test_store.py; here each op and each
error class crosses the wire once, plus what only a daemon shows (concurrent
writers, replies carrying the flow)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flowd_client import (
    ConflictError,
    FlowClient,
    InvalidArgumentError,
    NotFoundError,
    TooLargeError,
)
from flowd_client.protocol import MAX_BATCH_OPS
from store_probes import MISSING, revision

# ------------------------------------------------------------------ compare-and-set


def test_cas_update(client: FlowClient) -> None:
    fid = client.add_flow("a", [{"p": 1}])
    f0 = client.get_flow_by_id(fid)
    f1 = client.update_flow(fid, name="b", if_revision=f0.revision)
    assert f1.name == "b" and f1.plans == [{"p": 1}] and f1.revision > f0.revision
    before = revision(client)
    with pytest.raises(ConflictError) as err:
        client.update_flow(fid, name="lost", plans=[], if_revision=f0.revision)
    assert err.value.current_revision == f1.revision
    assert str(f0.revision) in str(err.value)
    assert client.get_flow_by_id(fid) == f1 and revision(client) == before  # nothing changed
    with pytest.raises(NotFoundError):
        client.update_flow(MISSING, name="x", if_revision=1)
    f2 = client.update_flow(fid, plans=[], if_revision=f1.revision)
    assert f2.name == "b" and f2.plans == []


def test_cas_delete(client: FlowClient) -> None:
    keep = client.add_flow("keep")
    fid = client.add_flow("x")
    rev = client.get_flow_by_id(fid).revision
    client.append_plan(fid, {"n": 1})
    before = revision(client)
    with pytest.raises(ConflictError) as err:
        client.delete_flow(fid, if_revision=rev)
    assert err.value.current_revision == client.get_flow_by_id(fid).revision != rev
    assert client.current_flow_id == fid and revision(client) == before
    assert client.delete_flow(fid, if_revision=err.value.current_revision) is True
    assert client.current_flow_id == keep
    with pytest.raises(ConflictError) as err:  # it must be there at that revision: it is not
        client.delete_flow(fid, if_revision=rev)
    assert err.value.current_revision is None
    assert client.delete_flow(fid) is False


# ------------------------------------------------------------------ plan operations


def plan_ids(client: FlowClient, fid: str) -> list[Any]:
    return [p.get("id") for p in client.get_flow_by_id(fid).plans]


def test_plan_operations(client: FlowClient) -> None:
    fid = client.add_flow("plans", [{"id": "a"}, {"id": "b"}])
    r0 = client.get_flow_by_id(fid).revision
    f = client.append_plan(fid, {"id": "c", "t": "third"})
    assert [p["id"] for p in f.plans] == ["a", "b", "c"] and f.revision == r0 + 1
    f = client.update_plan(fid, {"id": "b", "done": True}, index=1)
    assert f.plans[1] == {"id": "b", "done": True}
    f = client.update_plan(fid, {"done": False}, plan_id="c")  # keeps the plan's id
    assert f.plans[2] == {"id": "c", "done": False}
    f = client.update_plan(fid, {"id": "a", "last": 1}, index=-3)
    assert f.plans[0] == {"id": "a", "last": 1}
    f = client.move_plan(fid, 2, 0)
    assert [p["id"] for p in f.plans] == ["c", "a", "b"]
    f = client.move_plan(fid, 0, -1)
    assert [p["id"] for p in f.plans] == ["a", "b", "c"]
    f = client.remove_plan(fid, plan_id="b")
    assert [p["id"] for p in f.plans] == ["a", "c"]
    f = client.remove_plan(fid, index=-1)
    assert [p["id"] for p in f.plans] == ["a"] and f.revision == r0 + 8
    f = client.append_plan(fid, {"id": "d"}, if_revision=f.revision)
    assert plan_ids(client, fid) == ["a", "d"]


def test_plan_operation_errors_change_nothing(client: FlowClient) -> None:
    fid = client.add_flow("plans", [{"id": "a"}, {"id": "b"}])
    flow = client.get_flow_by_id(fid)
    before = revision(client)
    failing: list[tuple[Callable[[], Any], type[Exception]]] = [  # one per op and class
        (lambda: client.update_plan(fid, {}, plan_id="zz"), NotFoundError),
        (lambda: client.update_plan(fid, {}), InvalidArgumentError),
        (lambda: client.remove_plan(fid), InvalidArgumentError),
        (lambda: client.remove_plan(fid, index=7), NotFoundError),
        (lambda: client.move_plan(fid, 0, 2), NotFoundError),
        (lambda: client.append_plan(MISSING, {}), NotFoundError),
        (lambda: client.append_plan(fid, {"x": float("nan")}), InvalidArgumentError),
        (lambda: client.append_plan(fid, [1]), InvalidArgumentError),  # type: ignore[arg-type]
        (lambda: client.append_plan(fid, {}, if_revision=flow.revision + 1), ConflictError),
        (lambda: client.remove_plan(fid, index=0, if_revision=0), ConflictError),
        (lambda: client.move_plan(fid, 0, 1, if_revision=0), ConflictError),
    ]
    for call, exc in failing:
        with pytest.raises(exc):
            call()
    assert revision(client) == before and client.get_flow_by_id(fid) == flow


def test_concurrent_plan_appends_are_atomic(daemon) -> None:
    with daemon.client() as c:
        fid = c.add_flow("log")

        def work(t: int) -> None:
            with daemon.client() as mine:
                for i in range(20):
                    mine.append_plan(fid, {"t": t, "i": i})
        with ThreadPoolExecutor(4) as ex:
            list(ex.map(work, range(4)))
        plans = c.get_flow_by_id(fid).plans
        assert sorted((p["t"], p["i"]) for p in plans) == [(t, i) for t in range(4)
                                                           for i in range(20)]
        for t in range(4):  # each writer's appends keep their order
            assert [p["i"] for p in plans if p["t"] == t] == list(range(20))


# ------------------------------------------------------------------ batches


def test_batch_applies_all_under_one_revision(client: FlowClient) -> None:
    a = client.add_flow("a", [{"id": "p"}])
    b = client.add_flow("b")
    ra = client.get_flow_by_id(a).revision
    before = revision(client)
    with client.batch() as batch:
        batch.check(a, ra).check(MISSING, None)
        batch.update_flow(a, name="a2", if_revision=ra)
        batch.append_plan(a, {"id": "q"})
        batch.add_flow("c", [{"id": 1}])
        batch.delete_flow(b)
        batch.set_current(a)
        batch.remove_plan(a, plan_id="p")
    results = batch.results
    assert results is not None and len(results) == 8
    c = results[4]
    assert results[0] is True and results[1] is True and results[5] is True
    after = revision(client)
    assert after == before + 1
    flows = client.get_all_flows()
    assert list(flows) == [a, c] and client.current_flow_id == a
    assert flows[a].name == "a2" and [p["id"] for p in flows[a].plans] == ["q"]
    assert flows[a].revision == flows[c].revision == after


@pytest.mark.parametrize("bad_index", [0, 3])  # before and after a staged update
def test_failing_batch_changes_nothing_and_names_the_op(client: FlowClient,
                                                        bad_index: int) -> None:
    a = client.add_flow("a")
    ra = client.get_flow_by_id(a).revision
    ops: list[dict[str, Any]] = [
        {"op": "add_flow", "args": {"name": "never"}},
        {"op": "update_flow", "args": {"flow_id": a, "name": "never"}},
        {"op": "set_current", "args": {"flow_id": a}},
        {"op": "append_plan", "args": {"flow_id": a, "plan": {"never": 1}}},
    ]
    ops[bad_index] = {"op": "check", "args": {"flow_id": a, "revision": ra + 5}}
    before = (revision(client), client.get_all_flows(), client.current_flow_id)
    with pytest.raises(ConflictError) as err:
        client.commit_batch(ops)
    assert f"batch operation {bad_index} (check)" in str(err.value)
    assert err.value.data["index"] == bad_index
    # a check sees the batch's own staged changes: after op 1 updated the flow it is at the
    # batch's revision
    assert err.value.current_revision == (ra if bad_index < 2 else before[0] + 1)
    assert (revision(client), client.get_all_flows(), client.current_flow_id) == before
    assert client.find_by_name("never") == []


def test_batch_errors(client: FlowClient) -> None:
    a = client.add_flow("a")
    before = revision(client)
    with pytest.raises(NotFoundError, match=r"batch operation 1 \(update_flow\)"):
        with client.batch() as b:
            b.add_flow("never")
            b.update_flow(MISSING, name="x")
    with pytest.raises(InvalidArgumentError, match=r"ops\[1\] \(append_plan\)"):
        client.commit_batch([{"op": "add_flow", "args": {"name": "x"}},
                             {"op": "append_plan", "args": {"flow_id": a, "plan": 3}}])
    with pytest.raises(InvalidArgumentError, match="cannot be used in a batch"):
        client.commit_batch([{"op": "save", "args": {}}])
    with pytest.raises(InvalidArgumentError):
        client.commit_batch([])
    with pytest.raises(TooLargeError):
        client.commit_batch([{"op": "check", "args": {"flow_id": a, "revision": None}}]
                            * (MAX_BATCH_OPS + 1))
    with pytest.raises(RuntimeError):  # an exception in the block sends nothing
        with client.batch() as b:
            b.add_flow("never")
            raise RuntimeError("changed my mind")
    with client.batch():
        pass  # an empty batch sends nothing
    assert revision(client) == before and client.find_by_name("never") == []


def test_batch_builder_covers_every_plan_op(client: FlowClient) -> None:
    a = client.add_flow("a", [{"id": 1}, {"id": 2}])
    rev = client.get_flow_by_id(a).revision
    with client.batch() as b:
        b.update_plan(a, {"id": 1, "x": True}, index=0, if_revision=rev)
        b.move_plan(a, 0, 1)
        b.remove_plan(a, plan_id=2)
    assert client.get_flow_by_id(a).plans == [{"id": 1, "x": True}]
