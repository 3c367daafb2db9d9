"""The stray merge's passes over flowd's lines (flowd.flow_lines): they must say
exactly what decoding every line would, only faster.

``unheld`` may keep a flow that is a sub-map after all (the exact comparison
then clears it), but must never clear one that is not: a cleared flow is
taken as the tool's untouched copy and its edit would be lost. ``changed_after``
must find every flow above a revision however its line is laid out.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from merge_builders import CORE, T0, T1, tool_rewrite

from flowd import flow_lines
from flowd.flow_lines import FlowTable
from flowd.merge import suspects_of

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 12), st.sampled_from([1.0, 0.5]),
                    st.sampled_from(["", "t", "x,", '"', "\\", "é", '"revision":1}']))
KEYS = st.sampled_from(["id", "n", "revision", "text", "x"])
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)), max_leaves=8)
IDS = st.sampled_from(["f1", "f2", 'f"3', "f\\4", "플로우", "f 6"])


@st.composite
def flows(draw) -> dict:
    """A flow as the store holds it: core keys, maybe extras, ``revision`` anywhere."""
    flow = {"id": "", "name": draw(st.sampled_from(["a", "b", "이름", 'q"'])),
            "plans": draw(st.lists(VALUES, max_size=3)), "created": T0,
            "updated": draw(st.sampled_from([T0, T1]))}
    extras = draw(st.dictionaries(st.sampled_from(["x_a", "x_b"]), VALUES, max_size=2))
    revision = {"revision": draw(st.integers(0, 2**64 - 1))}  # an int: the loader's rule
    where = draw(st.sampled_from(["before extras", "last", "none"]))
    if where == "before extras":
        flow.update(revision)
    flow.update(extras)
    if where == "last":
        flow.update(revision)
    return flow


def _variant(draw, flow: dict) -> dict:
    """What a tool may write back for ``flow``: its copy, an edit, another key order."""
    kind = draw(st.sampled_from(["copy", "core", "edit", "reorder", "float", "extra"]))
    if kind == "copy":
        return json.loads(json.dumps(flow))
    if kind == "core":
        return tool_rewrite({"f": flow})["f"]
    if kind == "edit":
        return {**flow, "name": flow["name"] + "!"}
    if kind == "reorder":
        return dict(reversed(list(flow.items())))
    if kind == "float":
        return {**flow, "plans": [1.0, *flow["plans"]]} if flow["plans"][:1] == [1] else \
            {**flow, "plans": [1, *flow["plans"]]}
    return {**flow, "x_new": draw(VALUES)}


@st.composite
def stores(draw) -> tuple[dict[str, dict], dict[str, dict]]:
    ours, theirs = {}, {}
    for fid in draw(st.lists(IDS, unique=True, max_size=5)):
        flow = {**draw(flows()), "id": fid}
        if draw(st.booleans()):
            ours[fid] = flow
        if draw(st.integers(0, 3)):
            theirs[fid] = _variant(draw, flow)
    return ours, theirs


def _lines(ours: dict[str, dict]) -> dict[str, bytes]:
    return {fid: flow_lines.encode(fid, flow) for fid, flow in ours.items()}


@settings(max_examples=400, deadline=None)
@given(stores())
def test_unheld_clears_only_sub_maps_and_suspects_stay_the_same(store) -> None:
    ours, theirs = store
    lines = _lines(ours)
    kept = flow_lines.unheld(lines, theirs)
    assert kept == [fid for fid in theirs if fid in kept]  # theirs' order
    for fid in theirs.keys() - set(kept):
        assert theirs[fid].items() <= flow_lines.decode(fid, lines[fid]).items(), fid
    table = FlowTable(lines)
    assert suspects_of(table, theirs, kept) == suspects_of(table, theirs)


def test_the_old_tools_copy_of_an_untouched_flow_is_cleared_without_decoding() -> None:
    """The usual case, which the pass is for: no decode, no digest."""
    ours = {fid: {"id": fid, "name": f"이름 {fid}", "plans": [{"id": 1, "w": 0.25, "t": "é"}],
                  "created": T0, "updated": T1, "revision": 7} for fid in ("f1", 'f"2', "f\\3")}
    text = json.dumps({fid: {k: f[k] for k in CORE} for fid, f in ours.items()}, indent=2,
                      ensure_ascii=False)
    theirs = json.loads(text)
    theirs['f"2'] = {**theirs['f"2'], "name": "edited"}
    assert flow_lines.unheld(_lines(ours), theirs) == ['f"2']
    assert flow_lines.unheld(_lines(ours), {"f1": {**theirs["f1"], "updated": T0[:-1]}}) \
        == ["f1"]  # a value that is a prefix of ours' is no match
    assert flow_lines.unheld({}, {"f1": theirs["f1"]}) == ["f1"]
    longer = {"f1": {**{k: ours["f1"][k] for k in CORE}, "n": 12, "revision": 7}}
    assert flow_lines.unheld(_lines(longer), {"f1": {**theirs["f1"], "n": 1}}) == ["f1"]
    assert flow_lines.unheld(_lines(longer), {"f1": {**theirs["f1"], "n": 12}}) == []


@st.composite
def revision_lines(draw) -> dict[str, bytes]:
    out = {}
    for fid in draw(st.lists(IDS, unique=True, max_size=5)):
        flow = {**draw(flows()), "id": fid}
        out[fid] = flow_lines.encode(fid, flow)
    return out


@settings(max_examples=400, deadline=None)
@given(revision_lines(), st.integers(-1, 2**64))
def test_changed_after_finds_what_decoding_finds(lines, floor) -> None:
    want = [fid for fid, line in lines.items()
            if flow_lines.decode(fid, line).get("revision", 0) > floor]
    assert flow_lines.changed_after(lines, floor) == want
    for fid, line in lines.items():
        assert flow_lines.revision_of(fid, line) == flow_lines.decode(fid, line).get(
            "revision", 0)


def test_a_revision_inside_a_value_is_not_the_flows() -> None:
    nested = {"id": "f1", "name": "n", "plans": [{"revision": 99}], "created": T0,
              "updated": T0, "revision": 3}
    late = {"id": "f2", "name": "n", "plans": [], "created": T0, "updated": T0,
            "revision": 5, "x": {"a": 0, "revision": 1}}
    text = {"id": "f3", "name": "n", "plans": [], "created": T0, "updated": T0,
            "x": ',"revision":50}'}
    lines = _lines({"f1": nested, "f2": late, "f3": text})
    assert [flow_lines.revision_of(f, line) for f, line in lines.items()] == [3, 5, 0]
    assert flow_lines.changed_after(lines, 4) == ["f2"]
