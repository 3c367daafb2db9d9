"""The names index of a load, built a step at a time after it (flowd.store): whatever is
written between the steps, once complete it is the index built at once at the load. And
the table it is kept in (flowd.names_index), against a model of it."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowd import flow_lines, names_index, store
from flowd.flow_lines import FlowTable
from flowd.names_index import NamesIndex
from flowd.store import Store

NAMES = ("a", "b", "c", "이름")


def _flow(fid: str, name: str, rev: int) -> dict[str, Any]:
    return {"id": fid, "name": name, "plans": [], "created": "2024-05-01T09:00:00",
            "updated": "2024-05-01T09:00:00", "revision": rev}


def _loaded(names: list[str], keyed: bool) -> Store:
    """A store loaded as from flowd's own file (the loader's name keys, or none)."""
    lines = {f"flow_{i:08x}": flow_lines.encode(f"flow_{i:08x}", _flow(f"flow_{i:08x}", n, 0))
             for i, n in enumerate(names)}
    table = FlowTable(lines)
    if keyed:
        table.name_keys = [store.name_key(n) for n in names]
    s = Store()
    s.load({"version": "3.0", "meta": {"revision": 0}, "current_flow_id": None, "flows": table})
    return s


def _apply(s: Store, op: tuple[Any, ...]) -> None:
    kind, arg, name = op
    ids = list(s.flows.lines)
    if kind == "add":
        fid = f"flow_{0x10000000 + s.revision:08x}"
        flow: dict[str, Any] | None = _flow(fid, name, s.revision + 1)
    elif not ids:
        return
    else:
        fid = ids[arg % len(ids)]
        old = s.flows[fid]
        flow = None if kind == "delete" else _flow(fid, name if kind == "rename" else
                                                   old["name"], s.revision + 1)
    s.apply_record({"rev": s.revision + 1, "changes": [["write", fid, flow]],
                    "current": s.current_flow_id})


def _index(s: Store) -> dict[int, list[str]]:
    s.index_step()
    return dict(s.names.items())


_ops = st.lists(st.one_of(
    st.tuples(st.just("step"), st.integers(1, 5), st.just("")),
    st.tuples(st.sampled_from(["add", "rename", "update", "delete"]), st.integers(0, 99),
              st.sampled_from(NAMES))), max_size=40)


@settings(max_examples=300, deadline=None)
@given(names=st.lists(st.sampled_from(NAMES), max_size=25), ops=_ops, keyed=st.booleans(),
       collide=st.booleans())
def test_built_in_steps_equals_built_at_once(names: list[str], ops: list[tuple[Any, ...]],
                                            keyed: bool, collide: bool) -> None:
    with pytest.MonkeyPatch.context() as patch:
        if collide:  # every name one key: the ids' order within a key is all there is
            patch.setattr(store, "name_key", lambda name: 7)
        at_once, in_steps = _loaded(names, keyed), _loaded(names, keyed)
        at_once.index_step()
        for op in ops:
            if op[0] == "step":
                in_steps.index_step(op[1])
                continue
            _apply(at_once, op)
            _apply(in_steps, op)
        assert _index(in_steps) == _index(at_once)
        assert not in_steps.indexing
        for name in NAMES:
            got = [f["id"] for f in in_steps.find_by_name(name)]
            assert got == [f["id"] for f in at_once.find_by_name(name)]
            assert sorted(got) == sorted(f for f, x in in_steps.flows.items()
                                         if x["name"] == name)


def test_find_by_name_completes_the_index_first() -> None:
    s = _loaded(["a", "b"] * 3000, keyed=True)
    assert s.indexing and not dict(s.names.items())
    assert len(s.find_by_name("b")) == 3000
    assert not s.indexing


def test_an_empty_load_has_nothing_to_index() -> None:
    assert not _loaded([], keyed=True).indexing


# ------------------------------------------------------------ the table itself

def _model_ids(model: tuple[dict[int, list[str]], dict[int, list[str]]], key: int) -> list[str]:
    first, later = model
    return first.get(key, []) + later.get(key, [])


_table_ops = st.lists(st.tuples(st.sampled_from(["fill", "add", "remove"]), st.integers(0, 2),
                                st.integers(0, 3), st.integers(0, 4)), max_size=60)


@settings(max_examples=400, deadline=None)
@given(loaded=st.integers(0, 9), ops=_table_ops)
def test_the_table_keeps_each_keys_ids_in_order(loaded: int,
                                                ops: list[tuple[str, int, int, int]]) -> None:
    """Keys that share home slots (0, 1 and the last, which wraps to 0) probe past
    each other, around the end, and past the slots of keys whose ids have all gone."""
    table = NamesIndex(loaded)
    size = int(loaded * names_index.SLOTS_PER_FLOW) + 1
    tiers: tuple[dict[int, list[str]], dict[int, list[str]]] = ({}, {})
    first, later = tiers
    filled, made = 0, []
    for kind, home, lap, n in ops:
        key, fid = (0, 1, size - 1)[home] + lap * size, f"flow_{n}"
        if kind == "remove":  # mostly one indexed (a miss is rarely the case that matters)
            key, fid = made[(home + n) % len(made)] if made and n else (key, fid)
            table.remove(key, fid)
            tier = later if fid in later.get(key, []) else first
            if fid in tier.get(key, []):
                tier[key].remove(fid)
        elif kind == "add" or filled < loaded:
            filled += kind == "fill"
            table.fill([key], [fid]) if kind == "fill" else table.add(key, fid)
            made.append((key, fid))
            ids = (first if kind == "fill" else later).setdefault(key, [])
            ids += [] if fid in ids else [fid]
        keys = {k for k, _ in made} | {0, 1, size, size - 1}
        assert {k: table.ids(k) for k in keys} == {k: _model_ids(tiers, k) for k in keys}
    assert dict(table.items()) == {k: v for k, _ in made if (v := _model_ids(tiers, k))}


def test_the_table_holds_no_object_per_flow() -> None:
    """A dict of int keys held ~70 bytes a flow (the dict, an int each); the table
    holds 3/5-full slots of 4 + 8 bytes, ~20 a flow, whatever ids it points to."""
    n = 100_000
    ids = [f"flow_{i:08x}" for i in range(n)]
    keys = [store.name_key(f"name {i}") for i in range(n)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        table = NamesIndex(n)
        for at in range(0, n, 4096):
            table.fill(keys[at:at + 4096], ids[at:at + 4096])
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 24 * n
    assert table.ids(keys[12345]) == [ids[12345]]


def test_the_table_refuses_more_names_than_it_was_built_for() -> None:
    """A full table would make every probe for a missing key loop for ever."""
    table = NamesIndex(2)
    table.fill([1, 1, 2], ["a", "b", "c"])  # a shared key takes no slot of its own
    with pytest.raises(ValueError, match="more names"):
        table.fill([3], ["d"])
    assert table.ids(3) == [] and table.ids(1) == ["a", "b"]
