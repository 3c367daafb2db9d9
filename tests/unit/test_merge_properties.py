"""Property test of flowd.merge's three-way merge (hypothesis), and the digest's
survival of the old tool's JSON round trip; the rule-by-rule cases are in test_merge.py."""

from __future__ import annotations

import copy
import json

from hypothesis import given, settings
from hypothesis import strategies as st
from merge_builders import CORE, T0, T1, apply_changes, stored_flow, three_way_merge, tool_rewrite

from flowd.digests import digest, same

NAMES = st.sampled_from(["a", "b", "c"])
PLANS = st.sampled_from([[], [{"id": "p", "text": "t"}]])
NEW_IDS = ["new0", "new1", "new2", "new3"]


@st.composite
def _edited(draw, base_flow: dict) -> dict:
    """A changed version of base_flow: name always differs (base names are ids)."""
    return {**base_flow, "name": draw(NAMES), "plans": draw(PLANS)}


@st.composite
def scenarios(draw):
    """Random base, and ours/theirs derived from it by random per-flow edits."""
    ids = [f"flow_{i}" for i in range(draw(st.integers(0, 7)))]
    base = {fid: stored_flow(fid, name=fid, revision=i + 1, **({"x": i} if i % 2 else {}))
            for i, fid in enumerate(ids)}
    edits: dict[str, tuple[str, str]] = {}
    ours: dict[str, dict] = {}
    theirs: dict[str, dict] = {}
    for fid in ids:
        o_edit = draw(st.sampled_from(["keep", "change", "delete"]))
        t_edit = draw(st.sampled_from(["keep", "change", "delete"]))
        edits[fid] = (o_edit, t_edit)
        if o_edit == "keep":
            ours[fid] = base[fid] if draw(st.booleans()) else copy.deepcopy(base[fid])
        elif o_edit == "change":
            ours[fid] = {**draw(_edited(base[fid])), "revision": 100}
        if t_edit != "delete":
            seed = tool_rewrite({fid: base[fid]})[fid]
            theirs[fid] = seed if t_edit == "keep" else draw(_edited(seed))
    for fid in draw(st.lists(st.sampled_from(NEW_IDS), unique=True)):
        ours[fid] = {"id": fid, "name": draw(NAMES), "plans": [], "created": T0,
                     "updated": T0, "revision": 50}
    for fid in draw(st.lists(st.sampled_from(NEW_IDS), unique=True)):
        theirs[fid] = {"id": fid, "name": draw(NAMES), "plans": draw(PLANS), "created": T0,
                       "updated": T0}
    theirs = dict(draw(st.permutations(list(theirs.items()))))
    pick = st.sampled_from([None, "ghost", *ids, *NEW_IDS])
    return base, ours, theirs, edits, (draw(pick), draw(pick), draw(pick))


def _matches(flow: dict, theirs_flow: dict) -> bool:
    return all(flow.get(k) == v for k, v in theirs_flow.items() if k not in ("revision", "id"))


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_merge_properties(scenario) -> None:
    base, ours, theirs, edits, (base_cur, ours_cur, theirs_cur) = scenario
    result = three_way_merge(base, base_cur, ours, ours_cur, theirs, theirs_cur)
    merged = apply_changes(ours, result)
    for fid, (o_edit, t_edit) in edits.items():
        if t_edit == "change" and o_edit == "keep":  # the tool's edit lands
            assert _matches(merged[fid], theirs[fid])
        elif o_edit == "change":  # flowd's acknowledged version stays, whatever the tool did
            assert merged[fid] is ours[fid]
            if t_edit != "keep" and not _matches(ours[fid], theirs.get(fid, {"name": None})):
                assert fid in result.conflicts
        elif o_edit == "delete":  # flowd's delete stays
            assert fid not in merged
        elif t_edit == "delete":  # deleted by the tool, unchanged by flowd
            assert fid not in merged
        else:
            assert merged[fid] is ours[fid]
    for fid in NEW_IDS:
        if fid in ours:
            assert merged[fid] is ours[fid]  # never replaced by the tool's namesake
        if fid in theirs:  # the tool's new flow is there, under its id or a fresh one
            new = result.renamed.get(fid, fid)
            assert _matches(merged[new], theirs[fid])
    assert result.current_flow_id is None or result.current_flow_id in merged
    assert (result.current_flow_id is None) == (not merged)


def test_digest_survives_the_old_tools_rewrite() -> None:
    """json.dump(indent=2, ensure_ascii=False) of the five core keys, parsed again: the
    same digest (core part) as flowd's copy with revision and extras."""
    flow = {"id": "f1", "name": "프로젝트 A", "plans": [{"id": 1, "w": 0.1, "n": None,
                                                     "deep": {"k": [1, 2.5e-7, "é"]}}],
            "created": T0, "updated": T1, "revision": 42, "x_new": {"k": 1}}
    text = json.dumps({k: flow[k] for k in CORE}, indent=2, ensure_ascii=False)
    tool = json.loads(text)
    assert same(digest(tool), digest(flow))
    assert not same(digest({**tool, "plans": []}), digest(flow))
    assert digest({**flow, "revision": 7}) == digest(flow)
