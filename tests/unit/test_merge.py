"""Tests for flowd.merge: the three-way merge of a stray writer's flows.json.

The stray writer is an old tool that rewrites the whole file with the five
core keys only, so most tests build "theirs" the way it would: a JSON round
trip (fresh objects, never identical to ours) with ``revision`` and unknown
keys dropped. The base is given as flows here and turned into what flowd
remembers of it (a digest per flow, :mod:`flowd.digests`); no rule reads a
timestamp, so ``updated`` values below never decide anything.
"""

from __future__ import annotations

import copy
import json

from merge_builders import T1, T2, stored_flow, three_way_merge, tool_rewrite

from flowd import merge
from flowd.digests import digest, same
from flowd.merge import REPORT_ID_LIMIT


def _base3() -> dict[str, dict]:
    """Three stored flows, each with an unknown key the old tool will drop."""
    return {fid: stored_flow(fid, name=fid, x_new={"k": fid}) for fid in ("f1", "f2", "f3")}




def test_stale_revision_or_missing_core_key_in_theirs_is_not_a_change() -> None:
    base = _base3()
    theirs = json.loads(json.dumps(base))
    theirs["f2"]["revision"] = 999
    del theirs["f3"]["plans"]  # refilled from ours if taken in, so never a change
    assert three_way_merge(base, None, dict(base), None, theirs, None).changes == []


def test_added_by_theirs_is_taken_in_without_revision() -> None:
    base = _base3()
    theirs = tool_rewrite(base)
    theirs["f9"] = stored_flow("f9", name="new", revision=7)
    result = three_way_merge(base, "f1", dict(base), "f1", theirs, "f1")
    assert [(op, fid) for op, fid, _ in result.changes] == [("merge_add", "f9")]
    added = result.changes[0][2]
    assert added is not theirs["f9"] and "revision" not in added
    assert added == {k: v for k, v in theirs["f9"].items() if k != "revision"}
    assert result.report["added"] == 1


def test_deleted_by_theirs_and_unchanged_by_ours_is_deleted() -> None:
    base = _base3()
    theirs = tool_rewrite(base)
    del theirs["f2"]
    result = three_way_merge(base, "f1", dict(base), "f1", theirs, "f1")
    assert result.changes == [("merge_delete", "f2", None)]
    assert result.report["deleted"] == 1




def test_changed_by_theirs_only_takes_theirs_and_keeps_dropped_keys() -> None:
    base = _base3()
    theirs = tool_rewrite(base)
    theirs["f2"]["name"] = "theirs"
    result = three_way_merge(base, "f1", dict(base), "f1", theirs, "f1")
    assert [(op, fid) for op, fid, _ in result.changes] == [("merge_update", "f2")]
    flow = result.changes[0][2]
    assert flow["name"] == "theirs" and flow["x_new"] == {"k": "f2"}
    assert "revision" not in flow
    assert result.report["updated"] == 1


def test_changed_by_ours_only_is_left_alone() -> None:
    base = _base3()
    ours = dict(base)
    ours["f2"] = {**base["f2"], "name": "ours", "updated": T1, "revision": 2}
    result = three_way_merge(base, "f1", ours, "f1", tool_rewrite(base), "f1")
    assert result.changes == []


def test_unchanged_ours_may_be_an_equal_copy_not_the_same_object() -> None:
    base = _base3()
    ours = copy.deepcopy(base)
    theirs = tool_rewrite(base)
    del theirs["f3"]
    result = three_way_merge(base, None, ours, None, theirs, None)
    assert result.changes == [("merge_delete", "f3", None)]




def test_deleted_by_ours_and_unchanged_by_theirs_stays_deleted() -> None:
    base = _base3()
    ours = dict(base)
    del ours["f2"]
    assert three_way_merge(base, "f1", ours, "f1", tool_rewrite(base), "f1").changes == []














def test_changes_are_ordered_deletes_updates_adds() -> None:
    base = {fid: stored_flow(fid, name=fid) for fid in ("a", "b", "c", "d", "e")}
    theirs = tool_rewrite(base)
    del theirs["d"], theirs["b"]
    theirs = {k: theirs[k] for k in ("e", "c", "a")}
    theirs["e"]["name"] = theirs["a"]["name"] = "x"
    theirs["z"] = stored_flow("z")
    theirs["y"] = stored_flow("y")
    result = three_way_merge(base, None, dict(base), None, theirs, None)
    assert [(op, fid) for op, fid, _ in result.changes] == [
        ("merge_delete", "b"), ("merge_delete", "d"), ("merge_update", "e"),
        ("merge_update", "a"), ("merge_add", "z"), ("merge_add", "y")]


def test_current_theirs_new_choice_is_taken_if_it_exists() -> None:
    base = _base3()
    theirs = tool_rewrite(base)
    theirs["f9"] = stored_flow("f9")
    assert three_way_merge(base, "f1", dict(base), "f2", theirs, "f3").current_flow_id == "f3"
    assert three_way_merge(base, "f1", dict(base), "f2", theirs, "f9").current_flow_id == "f9"


def test_current_ours_kept_when_theirs_unchanged_or_gone() -> None:
    base = _base3()
    theirs = tool_rewrite(base)
    assert three_way_merge(base, "f1", dict(base), "f2", theirs, "f1").current_flow_id == "f2"
    assert three_way_merge(base, "f1", dict(base), "f2", theirs, "ghost").current_flow_id == "f2"
    assert three_way_merge(base, "f1", dict(base), "f2", theirs, None).current_flow_id == "f2"


def test_current_falls_back_to_first_remaining_flow_or_none() -> None:
    base = _base3()
    theirs = tool_rewrite(base)
    del theirs["f1"]
    result = three_way_merge(base, "f1", dict(base), "f1", theirs, "f1")
    assert result.current_flow_id == "f2"
    only_added = {"f9": stored_flow("f9"), "f8": stored_flow("f8")}
    result = three_way_merge(base, "f1", dict(base), "f1", only_added, None)
    assert result.current_flow_id == "f9"
    assert three_way_merge(base, "f1", dict(base), "f1", {}, None).current_flow_id is None


def test_report_id_lists_are_capped() -> None:
    base = {f"f{i}": stored_flow(f"f{i}") for i in range(REPORT_ID_LIMIT + 5)}
    ours = {fid: {**f, "name": "ours", "updated": T2} for fid, f in base.items()}
    theirs = {fid: {**f, "name": "theirs", "updated": T1} for fid, f in tool_rewrite(base).items()}
    report = three_way_merge(base, None, ours, None, theirs, None).report
    assert report["conflicts"] == REPORT_ID_LIMIT + 5
    assert len(report["conflict_ids"]) == REPORT_ID_LIMIT




def test_100k_flows_with_few_differences() -> None:
    """Scale check without a clock (speed lives in benchmarks/): only the differing
    flow comes out, and nothing of 100k unchanged flows is copied or touched."""
    n = 100_000
    base = {f"flow_{i:08x}": stored_flow(f"flow_{i:08x}", name=f"n{i}", revision=i)
            for i in range(n)}
    ours = dict(base)
    theirs = tool_rewrite(base)
    theirs["flow_00000005"]["name"] = "changed"
    ours["flow_00000010"] = {**base["flow_00000010"], "name": "ours", "updated": T1}
    result = three_way_merge(base, None, ours, None, theirs, None)
    assert [fid for _, fid, _ in result.changes] == ["flow_00000005"]
    assert all(ours[fid] is base[fid] for fid in base if fid != "flow_00000010")


def test_stray_rewrite_that_only_drops_revision_and_extras_changes_nothing() -> None:
    base = _base3()
    result = three_way_merge(base, "f1", dict(base), "f1", tool_rewrite(base), "f1")
    assert result.changes == [] and result.conflicts == {}
    assert result.current_flow_id == "f1"
    assert {k: v for k, v in result.report.items() if not k.endswith("_ids")} == {
        "added": 0, "updated": 0, "deleted": 0, "conflicts": 0, "skipped_deletions": 0,
        "renamed": {}}


def test_deleted_by_theirs_but_changed_by_ours_keeps_ours_as_a_conflict() -> None:
    base = _base3()
    ours = dict(base)
    ours["f2"] = {**base["f2"], "name": "ours", "revision": 2}
    theirs = tool_rewrite(base)
    del theirs["f2"]
    result = three_way_merge(base, "f1", ours, "f1", theirs, "f1")
    assert result.changes == [] and result.conflicts == {"f2": None}


def test_deleted_by_ours_but_changed_by_theirs_stays_deleted_as_a_conflict() -> None:
    base = _base3()
    ours = dict(base)
    del ours["f2"]
    theirs = tool_rewrite(base)
    theirs["f2"]["name"] = "theirs"
    result = three_way_merge(base, "f1", ours, "f1", theirs, "f1")
    assert result.changes == []
    assert result.conflicts["f2"]["name"] == "theirs"


def _both_changed(ours_updated: str, theirs_updated: str):
    base = _base3()
    ours = dict(base)
    ours["f2"] = {**base["f2"], "name": "ours", "updated": ours_updated, "revision": 2}
    theirs = tool_rewrite(base)
    theirs["f2"].update(name="theirs", updated=theirs_updated)
    return base, ours, theirs


def test_conflict_keeps_ours_whatever_the_timestamps() -> None:
    for ours_ts, theirs_ts in [(T1, T2), (T2, T1), ("garbage", "2999-01-01T00:00:00"),
                               (T1, T1)]:
        base, ours, theirs = _both_changed(ours_ts, theirs_ts)
        result = three_way_merge(base, "f1", ours, "f1", theirs, "f1")
        assert result.changes == [], (ours_ts, theirs_ts)
        assert result.conflicts["f2"]["name"] == "theirs"
        assert "revision" not in result.conflicts["f2"]
        assert result.report["conflict_ids"] == ["f2"]


def test_plans_edited_without_updated_is_a_change() -> None:
    base = _base3()
    theirs = tool_rewrite(base)
    theirs["f3"]["plans"] = [{"id": "p1", "text": "edited"}]
    result = three_way_merge(base, None, dict(base), None, theirs, None)
    assert [(op, fid) for op, fid, _ in result.changes] == [("merge_update", "f3")]
    assert result.changes[0][2]["x_new"] == {"k": "f3"}  # the key the tool dropped


def test_same_change_on_both_sides_is_not_a_conflict() -> None:
    base = _base3()
    ours = dict(base)
    ours["f2"] = {**base["f2"], "name": "same", "updated": T1, "revision": 2}
    theirs = tool_rewrite(base)
    theirs["f2"].update(name="same", updated=T1)
    result = three_way_merge(base, None, ours, None, theirs, None)
    assert result.changes == [] and result.conflicts == {}


def test_same_id_added_on_both_sides_gets_a_fresh_id() -> None:
    base = _base3()
    ours = {**base, "f9": stored_flow("f9", name="ours", revision=5)}
    theirs = tool_rewrite(base)
    theirs["f9"] = {**tool_rewrite({"f9": ours["f9"]})["f9"], "name": "theirs"}
    result = three_way_merge(base, None, ours, None, theirs, "f9")
    assert [(op, fid) for op, fid, _ in result.changes] == [("merge_add", "fresh0")]
    assert result.changes[0][2]["id"] == "fresh0" and result.renamed == {"f9": "fresh0"}
    assert result.current_flow_id == "fresh0"
    theirs["f9"] = tool_rewrite({"f9": ours["f9"]})["f9"]
    assert three_way_merge(base, None, ours, None, theirs, None).changes == []


def test_newer_tool_editing_only_an_unknown_key_is_an_edit() -> None:
    base = _base3()
    theirs = json.loads(json.dumps(base))
    theirs["f1"]["x_new"] = {"k": "edited"}
    result = three_way_merge(base, None, dict(base), None, theirs, None)
    assert [(op, fid) for op, fid, _ in result.changes] == [("merge_update", "f1")]
    flow = dict(base["f1"])
    stripped = {k: v for k, v in flow.items() if k != "x_new"}
    assert same(digest(stripped), digest(flow))  # an old tool's copy still matches


def test_unknown_base_takes_additions_and_edits_and_no_deletion() -> None:
    base = {**_base3(), "f4": stored_flow("f4", revision=5)}  # held as is: the tool loaded rev 5+
    ours = dict(base)
    ours["f3"] = {**base["f3"], "name": "ours", "revision": 9}  # changed after the tool loaded
    theirs = tool_rewrite(base)
    theirs["f1"]["name"] = "tool"  # an edit of a flow ours did not change since
    theirs["f3"]["name"] = "tool"  # an edit of a flow ours changed: a conflict
    del theirs["f2"]
    theirs["f9"] = stored_flow("f9")
    del theirs["f9"]["revision"]
    known = {fid: [digest(f)] for fid, f in base.items()}
    result = merge.three_way_merge(merge.Unknown(lambda fid: known.get(fid, ())), ours, "f1",
                                   theirs, "f9", ours_digest=lambda fid: digest(ours[fid]),
                                   new_id=lambda: "x")
    ops = [(op, fid) for op, fid, _ in result.changes]
    assert ops == [("merge_update", "f1"), ("merge_add", "f9")]
    assert result.replaced == {"f1": ours["f1"]}
    assert list(result.conflicts) == ["f3"]
    assert result.skipped_deletions == ["f2"]
    assert result.current_flow_id == "f9"


def test_unknown_base_stale_copy_is_no_edit() -> None:
    base = _base3()
    ours = dict(base)
    ours["f1"] = {**base["f1"], "name": "ours", "revision": 9}
    del ours["f2"]
    theirs = tool_rewrite(base)  # f1 and f2 as flowd once had them
    known = {fid: [digest(f)] for fid, f in base.items()}
    result = merge.three_way_merge(merge.Unknown(lambda fid: known.get(fid, ())), ours, "f1",
                                   theirs, "f1", ours_digest=lambda fid: digest(ours[fid]),
                                   new_id=lambda: "x")
    assert result.changes == [] and result.conflicts == {}


def test_inputs_are_not_mutated() -> None:
    base, ours, theirs = _both_changed(T1, T2)
    theirs["f7"] = stored_flow("f7", revision=3)
    del theirs["f3"]
    snapshot = copy.deepcopy((base, ours, theirs))
    result = three_way_merge(base, "f1", ours, "f1", theirs, "f7")
    for _, _, flow in result.changes:
        if flow is not None:
            flow["revision"] = 123  # what the store does next
    assert (base, ours, theirs) == snapshot
