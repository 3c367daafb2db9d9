"""The store and the write ops without a daemon: seed rules, revisions, index, Txn, batches."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flowd_client.errors import ConflictError, InternalError, InvalidArgumentError, NotFoundError

from flowd import ops
from flowd.store import Store, Txn

ID = re.compile(r"^flow_[0-9a-f]{8}$")


def write(store: Store, op: str, **args: Any) -> Any:
    """One op in its own transaction, committed like the daemon does (record, then apply)."""
    txn = store.begin()
    result = ops.WRITES[op](txn, args)
    record = txn.record()
    if record is not None:
        store.apply_record(record)
    return result


class Group:
    """The daemon's group commit: child txns over one group txn, then apply every record."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.txn = store.begin()
        self.records: list[dict[str, Any]] = []

    def write(self, op: str, **args: Any) -> Any:
        child = self.store.begin(parent=self.txn)
        result = ops.WRITES[op](child, args)  # on error the child is simply dropped
        record = child.record()
        if record is not None:
            self.records.append(record)
            child.merge_into_parent()
        return result

    def commit(self) -> None:
        for record in self.records:
            self.store.apply_record(record)


def names(store: Store) -> dict[str, list[str]]:
    """The name index as find_by_name sees it (and no id left in it without a flow)."""
    store.index_step()  # what find_by_name does first: the index of a load, complete
    indexed = [fid for _, ids in store.names.items() for fid in ids]
    assert sorted(indexed) == sorted(store.flows)
    return {n: [f["id"] for f in store.find_by_name(n)]
            for n in dict.fromkeys(f["name"] for f in store.flows.values())}


# ------------------------------------------------------------------ seed rules


def test_seed_rules() -> None:
    s = Store()
    a = write(s, "add_flow", name="A", plans=[{"t": 1}])
    assert ID.match(a) and s.current_flow_id == a  # add makes current
    b = write(s, "add_flow", name="B")
    c = write(s, "add_flow", name="B")
    assert len({a, b, c}) == 3 and s.current_flow_id == c
    assert list(s.flows) == [a, b, c]
    assert [f["id"] for f in s.find_by_name("B")] == [b, c]
    assert s.find_by_name("nobody") == []
    assert s.flows[b]["plans"] == [] and s.flows[a]["plans"] == [{"t": 1}]
    rev = s.revision
    assert write(s, "set_current", flow_id="flow_00000000") is False
    assert s.revision == rev and s.current_flow_id == c  # unknown id changes nothing
    assert write(s, "set_current", flow_id=a) is True and s.current_flow_id == a
    assert write(s, "delete_flow", flow_id=a) is True
    assert s.current_flow_id == b  # first remaining in creation order
    rev = s.revision
    assert write(s, "delete_flow", flow_id=a) is False and s.revision == rev
    assert write(s, "delete_flow", flow_id=c) is True and s.current_flow_id == b  # not current
    assert write(s, "delete_flow", flow_id=b) is True
    assert s.current_flow_id is None and s.flows == {} and names(s) == {}


def test_revisions_and_stamps() -> None:
    s = Store()
    a = write(s, "add_flow", name="a")
    f1, line1 = s.flows[a], s.flows.lines[a]
    assert s.revision == 1 and f1["revision"] == 1 and f1["created"] == f1["updated"]
    b = write(s, "add_flow", name="b")
    assert s.revision == 2 and s.flows.lines[a] is line1  # an untouched flow keeps its line
    f2 = write(s, "update_flow", flow_id=a, name="a2")
    assert s.revision == 3 and f2["revision"] == 3 and s.flows[a] == f2
    assert f2["created"] == f1["created"] and f2["updated"] >= f1["updated"]
    assert f1["name"] == "a" and f1["revision"] == 1  # stored dicts are never mutated
    write(s, "set_current", flow_id=a)
    assert s.revision == 4 and s.flows[a]["revision"] == 3  # set_current bumps the store only
    write(s, "append_plan", flow_id=b, plan={"x": 1})
    assert s.revision == 5 and s.flows[b]["revision"] == 5
    write(s, "update_flow", flow_id=b)  # no fields: still a write that stamps
    assert s.revision == 6 and s.flows[b]["revision"] == 6


def test_apply_record_refuses_out_of_order() -> None:
    s = Store()
    txn = s.begin()
    ops.add_flow(txn, {"name": "x"})
    record = txn.record()
    assert record is not None
    s.apply_record(record)
    with pytest.raises(InternalError):
        s.apply_record(record)  # the same revision twice
    record2 = {**record, "rev": s.revision + 2}
    with pytest.raises(InternalError):
        s.apply_record(record2)


def test_name_index_follows_renames_and_deletes() -> None:
    s = Store()
    a = write(s, "add_flow", name="x")
    b = write(s, "add_flow", name="x")
    write(s, "update_flow", flow_id=a, name="y")
    assert names(s) == {"x": [b], "y": [a]}
    write(s, "update_flow", flow_id=a, plans=[{"p": 1}])  # no rename: index untouched
    assert names(s) == {"x": [b], "y": [a]}
    write(s, "update_flow", flow_id=b, name="y")
    assert names(s) == {"y": [a, b]}
    write(s, "delete_flow", flow_id=a)
    assert names(s) == {"y": [b]}
    write(s, "delete_flow", flow_id=b)
    assert names(s) == {}


def test_load_rebuilds_index_and_fixes_current() -> None:
    s = Store()
    flows = {"flow_1": {"id": "flow_1", "name": "n", "plans": []},
             "flow_2": {"id": "flow_2", "name": "n", "plans": []}}
    s.load({"version": "3.0", "meta": {"revision": 7, "x": 1}, "current_flow_id": "gone",
            "flows": flows, "extra_top": True})
    assert s.revision == 7 and s.current_flow_id == "flow_1"
    assert names(s) == {"n": ["flow_1", "flow_2"]}
    assert s.meta_extra == {"x": 1} and s.extra == {"extra_top": True}
    assert write(s, "delete_flow", flow_id="flow_1") and s.current_flow_id == "flow_2"
    assert s.revision == 8


# ------------------------------------------------------------------ compare-and-set


def test_cas_update_and_delete() -> None:
    s = Store()
    a = write(s, "add_flow", name="a")
    rev = s.flows[a]["revision"]
    with pytest.raises(ConflictError) as err:
        write(s, "update_flow", flow_id=a, name="b", if_revision=rev + 1)
    assert err.value.current_revision == rev and s.flows[a]["name"] == "a"
    assert s.revision == rev
    f = write(s, "update_flow", flow_id=a, name="b", if_revision=rev)
    with pytest.raises(ConflictError) as err:
        write(s, "delete_flow", flow_id=a, if_revision=rev)
    assert err.value.current_revision == f["revision"] and a in s.flows
    with pytest.raises(NotFoundError):
        write(s, "update_flow", flow_id="flow_00000000", if_revision=1)
    with pytest.raises(ConflictError) as err:
        write(s, "delete_flow", flow_id="flow_00000000", if_revision=1)
    assert err.value.current_revision is None
    assert write(s, "delete_flow", flow_id=a, if_revision=f["revision"]) is True


# ------------------------------------------------------------------ plans


def test_plan_ops() -> None:
    s = Store()
    a = write(s, "add_flow", name="a", plans=[{"id": "p0"}, {"id": "p1"}, {"id": 2}])
    plans = lambda: s.flows[a]["plans"]  # noqa: E731
    write(s, "append_plan", flow_id=a, plan={"id": "p3"})
    assert [p["id"] for p in plans()] == ["p0", "p1", 2, "p3"]
    write(s, "update_plan", flow_id=a, index=-1, plan={"id": "p3", "v": 1})
    write(s, "update_plan", flow_id=a, plan_id=2, plan={"v": 2})  # keeps its id
    assert plans()[2] == {"id": 2, "v": 2} and plans()[3] == {"id": "p3", "v": 1}
    write(s, "move_plan", flow_id=a, src=0, dst=-1)
    assert [p["id"] for p in plans()] == ["p1", 2, "p3", "p0"]
    write(s, "remove_plan", flow_id=a, plan_id="p3")
    write(s, "remove_plan", flow_id=a, index=0)
    assert [p["id"] for p in plans()] == [2, "p0"]
    rev = s.revision
    for op, args, exc in [
        ("update_plan", {"index": 2, "plan": {}}, NotFoundError),
        ("update_plan", {"index": -3, "plan": {}}, NotFoundError),
        ("update_plan", {"plan_id": "nope", "plan": {}}, NotFoundError),
        ("update_plan", {"plan": {}}, InvalidArgumentError),
        ("update_plan", {"index": 0, "plan_id": 2, "plan": {}}, InvalidArgumentError),
        ("remove_plan", {"index": 5}, NotFoundError),
        ("remove_plan", {}, InvalidArgumentError),
        ("move_plan", {"src": 0, "dst": 2}, NotFoundError),
        ("append_plan", {"plan": {}, "if_revision": rev - 1}, ConflictError),
    ]:
        with pytest.raises(exc):
            write(s, op, flow_id=a, **args)
    with pytest.raises(NotFoundError):
        write(s, "append_plan", flow_id="flow_00000000", plan={})
    assert s.revision == rev and [p["id"] for p in plans()] == [2, "p0"]
    b = write(s, "add_flow", name="empty")
    with pytest.raises(NotFoundError):
        write(s, "move_plan", flow_id=b, src=0, dst=0)
    with pytest.raises(NotFoundError):
        write(s, "remove_plan", flow_id=b, index=0)


# ------------------------------------------------------------------ Txn nesting


def test_group_writes_see_each_other_and_take_consecutive_revisions() -> None:
    s = Store()
    x = write(s, "add_flow", name="x")
    g = Group(s)
    a = g.write("add_flow", name="a")
    g.write("append_plan", flow_id=a, plan={"n": 1})  # sees a before anything is applied
    assert a not in s.flows and s.revision == 1
    with pytest.raises(NotFoundError):
        g.write("update_flow", flow_id="flow_00000000", name="z")  # dropped, group intact
    b = g.write("add_flow", name="b")
    assert a != b
    g.write("delete_flow", flow_id=x)
    assert [r["rev"] for r in g.records] == [2, 3, 4, 5]
    assert g.txn.current == b
    g.commit()
    assert s.revision == 5 and list(s.flows) == [a, b] and s.current_flow_id == b
    assert s.flows[a]["plans"] == [{"n": 1}] and s.flows[a]["revision"] == 3


def test_no_change_write_consumes_no_revision_in_a_group() -> None:
    s = Store()
    g = Group(s)
    assert g.write("set_current", flow_id="flow_00000000") is False
    assert g.write("delete_flow", flow_id="flow_00000000") is False
    a = g.write("add_flow", name="a")
    assert [r["rev"] for r in g.records] == [1]
    g.commit()
    assert s.revision == 1 and s.flows[a]["revision"] == 1


def test_group_delete_of_current_moves_to_flow_added_in_group() -> None:
    s = Store()
    x = write(s, "add_flow", name="x")
    g = Group(s)
    a = g.write("add_flow", name="a")
    b = g.write("add_flow", name="b")
    g.write("set_current", flow_id=x)
    g.write("delete_flow", flow_id=x)
    assert g.txn.current == a  # the first remaining is a flow still only staged
    g.write("delete_flow", flow_id=a)
    assert g.txn.current == b
    g.commit()
    assert s.current_flow_id == b and list(s.flows) == [b]


def test_txn_reads_through_parent_without_touching_it() -> None:
    s = Store()
    a = write(s, "add_flow", name="a")
    parent = s.begin()
    child = Txn(s, parent)
    ops.update_flow(child, {"flow_id": a, "name": "renamed"})
    assert parent.get(a)["name"] == "a" and child.get(a)["name"] == "renamed"
    assert s.flows[a]["name"] == "a"
    assert parent.record() is None  # the child was never merged


# ------------------------------------------------------------------ batches


def test_batch_applies_under_one_revision() -> None:
    s = Store()
    a = write(s, "add_flow", name="a")
    b = write(s, "add_flow", name="b")
    rev_a = s.flows[a]["revision"]
    results = write(s, "batch", ops=[
        {"op": "check", "args": {"flow_id": a, "revision": rev_a}},
        {"op": "check", "args": {"flow_id": "flow_00000000", "revision": None}},
        {"op": "update_flow", "args": {"flow_id": a, "name": "a2"}},
        {"op": "add_flow", "args": {"name": "c"}},
        {"op": "append_plan", "args": {"flow_id": a, "plan": {"k": 1}}},
        {"op": "delete_flow", "args": {"flow_id": b}},
        {"op": "set_current", "args": {"flow_id": a}},
    ])
    c = results[3]
    assert results[0] is True and results[1] is True and results[5] is True
    assert results[6] is True and ID.match(c)
    assert s.revision == 3
    assert s.flows[a]["revision"] == 3 and s.flows[c]["revision"] == 3
    assert s.flows[a]["name"] == "a2" and s.flows[a]["plans"] == [{"k": 1}]
    assert list(s.flows) == [a, c] and s.current_flow_id == a
    assert names(s) == {"a2": [a], "c": [c]}


@pytest.mark.parametrize("failing,exc", [
    ({"op": "check", "args": {"flow_id": "A", "revision": 999}}, ConflictError),
    ({"op": "update_flow", "args": {"flow_id": "flow_00000000", "name": "z"}}, NotFoundError),
    ({"op": "remove_plan", "args": {"flow_id": "A", "index": 9}}, NotFoundError),
    ({"op": "update_plan", "args": {"flow_id": "A", "plan": {}}}, InvalidArgumentError),
    ({"op": "delete_flow", "args": {"flow_id": "A", "if_revision": 999}}, ConflictError),
])
def test_batch_is_all_or_nothing_and_names_the_failing_op(failing: dict, exc: type) -> None:
    s = Store()
    a = write(s, "add_flow", name="a")
    failing = {"op": failing["op"],
               "args": {k: (a if v == "A" else v) for k, v in failing["args"].items()}}
    before = (dict(s.flows), s.current_flow_id, s.revision, names(s))
    g = Group(s)
    with pytest.raises(exc) as err:
        g.write("batch", ops=[{"op": "add_flow", "args": {"name": "new"}},
                              {"op": "update_flow", "args": {"flow_id": a, "name": "b"}},
                              failing,
                              {"op": "add_flow", "args": {"name": "never"}}])
    assert err.value.data["index"] == 2 and err.value.data["op"] == failing["op"]
    assert f"batch operation 2 ({failing['op']})" in str(err.value)
    assert g.txn.record() is None and g.records == []
    g.commit()
    assert (dict(s.flows), s.current_flow_id, s.revision, names(s)) == before


def test_batch_of_checks_only_changes_nothing() -> None:
    s = Store()
    a = write(s, "add_flow", name="a")
    assert write(s, "batch", ops=[{"op": "check", "args": {"flow_id": a, "revision": 1}}]) == [
        True]
    assert s.revision == 1


# ------------------------------------------------------------------ first_remaining


def test_deleting_many_leading_flows_one_by_one() -> None:
    s = Store()
    ids = [write(s, "add_flow", name=f"f{i}") for i in range(3000)]
    write(s, "set_current", flow_id=ids[0])
    for i, fid in enumerate(ids[:-1]):
        write(s, "delete_flow", flow_id=fid)
        assert s.current_flow_id == ids[i + 1]
    write(s, "delete_flow", flow_id=ids[-1])
    assert s.current_flow_id is None and s.flows == {}


def test_deleting_many_leading_flows_in_one_batch_and_one_group() -> None:
    s = Store()
    ids = [write(s, "add_flow", name=f"f{i}") for i in range(1000)]
    write(s, "set_current", flow_id=ids[0])
    write(s, "batch", ops=[{"op": "delete_flow", "args": {"flow_id": f}} for f in ids[:900]])
    assert s.current_flow_id == ids[900] and list(s.flows) == ids[900:]
    g = Group(s)
    for fid in ids[900:999]:
        g.write("delete_flow", flow_id=fid)
    assert g.txn.current == ids[999]
    late = g.write("add_flow", name="late")
    g.write("delete_flow", flow_id=ids[999])
    assert g.txn.current == late
    g.write("set_current", flow_id=late)
    g.write("delete_flow", flow_id=late)
    assert g.txn.current is None
    g.commit()
    assert s.current_flow_id is None and s.flows == {} and names(s) == {}


def test_first_remaining_skips_deleted_in_store_and_parent() -> None:
    s = Store()
    ids = [write(s, "add_flow", name=str(i)) for i in range(5)]
    parent = s.begin()
    ops.delete_flow(parent, {"flow_id": ids[0]})
    child = Txn(s, parent)
    ops.delete_flow(child, {"flow_id": ids[1]})
    assert child.first_remaining() == ids[2]
    assert parent.first_remaining() == ids[1]


def test_names_whose_keys_collide_are_told_apart(monkeypatch) -> None:
    """The index is keyed by a hash of the name: with every name on one key,
    find_by_name still gives exactly the flows of the name asked for."""
    import flowd.store as store_mod

    monkeypatch.setattr(store_mod, "name_key", lambda name: 7)
    s = Store()
    a = write(s, "add_flow", name="a")
    b = write(s, "add_flow", name="b")
    a2 = write(s, "add_flow", name="a")
    assert names(s) == {"a": [a, a2], "b": [b]}
    write(s, "update_flow", flow_id=a, name="b")
    write(s, "delete_flow", flow_id=b)
    assert names(s) == {"b": [a], "a": [a2]}
    s2 = Store()
    s2.load({"version": "3.0", "meta": {}, "current_flow_id": None,
             "flows": {fid: s.flows[fid] for fid in s.flows}})
    assert names(s2) == {"b": [a], "a": [a2]} and s2.find_by_name("c") == []
