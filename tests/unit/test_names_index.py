"""The names index of a load, built a step at a time after it (flowd.store): whatever is
written between the steps, once complete it is the index built at once at the load."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowd import flow_lines, store
from flowd.flow_lines import FlowTable
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
    return {k: [v] if isinstance(v, str) else list(v) for k, v in s.names.items()}


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
    assert s.indexing and s.names == {}
    assert len(s.find_by_name("b")) == 3000
    assert not s.indexing


def test_an_empty_load_has_nothing_to_index() -> None:
    assert not _loaded([], keyed=True).indexing
