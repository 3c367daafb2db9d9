"""normalize(), the whole document: legacy shapes, the current flow, unknown keys,
meta, corrupt files; the incremental Migrator, speed and a property test.

The rules (DESIGN.md "Migration", the seed's edge cases) are binding: one test
pins each. Flow-by-flow rules are in test_migrate.py."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from migrate_builders import T0, canon, determinize, flow, v3

from flowd.storage.migrate import FLOW_KEYS, CorruptFileError, Migrator, normalize


def test_list_form_becomes_dict_in_list_order() -> None:
    doc, notes = normalize({"flows": [flow("b"), flow("a"), flow("c")]})
    assert list(doc["flows"]) == ["b", "a", "c"]
    assert list(doc) == ["version", "meta", "current_flow_id", "flows"]
    assert doc["version"] == "3.0"
    assert notes[0].startswith("migrated from no version (1.x) to 3.0: 3 flows")


def test_current_flow_object_collapses_to_id() -> None:
    raw = {"current_flow": {"id": "b", "name": "n", "plans": []},
           "flows": [flow("a"), flow("b")]}
    doc, notes = normalize(raw)
    assert doc["current_flow_id"] == "b"
    assert "current_flow" not in doc
    assert "current_flow collapsed to current_flow_id b" in notes
    doc, _ = normalize({"current_flow": "b", "flows": [flow("a"), flow("b")]})  # a bare id
    assert doc["current_flow_id"] == "b"


def test_current_flow_id_wins_over_current_flow_when_valid() -> None:
    raw = {"current_flow_id": "a", "current_flow": {"id": "b"}, "flows": [flow("a"), flow("b")]}
    assert normalize(raw)[0]["current_flow_id"] == "a"
    raw = {"current_flow_id": "zz", "current_flow": {"id": "b"},
           "flows": [flow("a"), flow("b")]}
    assert normalize(raw)[0]["current_flow_id"] == "b"


def test_current_flow_of_odd_type_kept_aside() -> None:
    doc, _ = normalize({"current_flow": 3, "flows": [flow("a")]})
    assert doc["current_flow_invalid"] == 3 and doc["current_flow_id"] == "a"


def test_dangling_current_flow_id_becomes_first_flow() -> None:
    doc, notes = normalize({"current_flow_id": "zz", "flows": [flow("a"), flow("b")]})
    assert doc["current_flow_id"] == "a"
    assert "current_flow_id 'zz' names no flow: set to a" in notes
    doc, notes = normalize(v3(canon("a"), canon("b"), current="zz"))
    assert doc["current_flow_id"] == "a"
    assert "current_flow_id 'zz' names no flow: set to a" in notes


def test_dangling_current_flow_id_without_flows_becomes_none() -> None:
    doc, notes = normalize({"current_flow_id": "zz", "flows": []})
    assert doc["current_flow_id"] is None
    assert "current_flow_id 'zz' names no flow: set to null" in notes
    doc, notes = normalize(v3(current="zz"))
    assert doc["current_flow_id"] is None and notes


def test_null_current_with_flows_becomes_first_flow() -> None:
    doc, notes = normalize({"version": "3.0", "current_flow_id": None,
                            "flows": {"a": canon("a")}})
    assert doc["current_flow_id"] == "a" and notes == ["no current flow: set to a"]
    doc, notes = normalize({"version": "3.0", "current_flow_id": None, "flows": {}})
    assert doc["current_flow_id"] is None and notes == []


def test_dict_form_pre_3_0_flows_accepted() -> None:
    raw = {"version": "2.1", "flows": {"a": {"name": "x", "plans": [1]},
                                       "b": {"id": "b", "name": "y"}}}
    doc, notes = normalize(raw)
    assert list(doc["flows"]) == ["a", "b"]
    assert doc["flows"]["a"]["id"] == "a" and doc["flows"]["a"]["plans"] == [1]
    assert notes[0].startswith("migrated from version '2.1' to 3.0: 2 flows")


def test_legacy_top_level_list_is_the_flows_list() -> None:
    doc, _ = normalize([flow("a"), flow("b")])
    assert list(doc["flows"]) == ["a", "b"] and doc["current_flow_id"] == "a"


def test_legacy_without_flows_key_is_empty_store() -> None:
    doc, notes = normalize({"settings": 1})
    assert doc["flows"] == {} and doc["settings"] == 1
    assert "the file had no 'flows': the store starts empty" in notes


@pytest.mark.parametrize("version", [None, "2.0", "1.5", 3])
def test_unknown_keys_kept_at_every_level(version: object) -> None:
    plan = {"title": "t", "future": {"deep": [1, 2]}}
    raw: dict[str, Any] = {"top_extra": [1], "meta": {"last_saved": T0, "meta_extra": "m"},
                           "flows": [flow("a", plans=[plan], flow_extra={"k": 1})],
                           "z_after": None}
    if version is not None:
        raw["version"] = version
    doc, _ = normalize(raw)
    assert list(doc) == ["version", "meta", "current_flow_id", "flows", "top_extra", "z_after"]
    assert doc["meta"] == {"last_saved": T0, "meta_extra": "m", "file_revision": 0,
                           "revision": 0}
    got = doc["flows"]["a"]
    assert got["flow_extra"] == {"k": 1} and got["plans"][0] is plan


def test_unknown_keys_kept_in_3_0_doc() -> None:
    raw = v3(canon("a", future=1), top_future={"x": 1})
    raw["meta"]["meta_future"] = True
    doc, notes = normalize(copy.deepcopy(raw))
    assert doc == raw and notes == []


def test_clean_3_0_doc_passes_through_unchanged() -> None:
    raw = v3(canon("a"), canon("b", rev=4, x=[1]), current="b")
    before = copy.deepcopy(raw)
    doc, notes = normalize(raw)
    assert notes == []
    assert doc == before
    assert list(doc) == list(before) and list(doc["meta"]) == list(before["meta"])
    assert [list(f) for f in doc["flows"].values()] == [list(f) for f in before["flows"].values()]


def test_3_0_doc_gets_only_silent_defaults() -> None:
    raw = {"version": "3.0", "current_flow_id": "a",
           "flows": {"a": {"name": "n", "plans": [], "created": T0, "updated": T0}}}
    doc, notes = normalize(raw)
    assert notes == []
    assert doc["meta"] == {"file_revision": 0, "revision": 0}
    assert doc["flows"]["a"] == {"id": "a", "name": "n", "plans": [], "created": T0,
                                 "updated": T0, "revision": 0}


def test_meta_not_a_dict_kept_aside_and_fresh_meta() -> None:
    doc, notes = normalize(v3(canon("a"), meta=["old"]))
    assert doc["meta_invalid"] == ["old"]
    assert doc["meta"] == {"file_revision": 0, "revision": 0}
    assert any(n.startswith("meta was an array") for n in notes)


def test_meta_revisions_must_be_ints() -> None:
    raw = v3(canon("a"))
    raw["meta"].update(file_revision="3", revision=None)
    doc, _ = normalize(raw)
    meta = doc["meta"]
    assert meta["file_revision"] == 0 and meta["file_revision_invalid"] == "3"
    assert meta["revision"] == 0 and meta["revision_invalid"] is None


def test_migrated_meta_revision_covers_flow_revisions() -> None:
    doc, notes = normalize({"flows": [flow("a", revision=5), flow("b", revision=2)]})
    assert doc["meta"]["revision"] == 5 and any("raised from 0 to 5" in n for n in notes)
    doc, _ = normalize({"flows": [flow("a")]})
    assert doc["meta"]["revision"] == 0
    raw = v3(canon("a", rev=50))  # 3.0: meta.revision belongs to the journal, untouched
    assert normalize(raw)[0]["meta"]["revision"] == 9


@pytest.mark.parametrize("raw", [None, 3, "flows", 1.5, True])
def test_top_level_not_an_object_is_corrupt(raw: object) -> None:
    with pytest.raises(CorruptFileError, match="top level"):
        normalize(raw)


@pytest.mark.parametrize("flows", ["x", 3, None, True])
def test_legacy_flows_of_wrong_type_is_corrupt(flows: object) -> None:
    with pytest.raises(CorruptFileError, match="'flows' is "):
        normalize({"flows": flows})


@pytest.mark.parametrize("flows", [[], [canon("a")], "x", None])
def test_3_0_flows_not_a_dict_is_corrupt(flows: object) -> None:
    with pytest.raises(CorruptFileError, match="version 3.0"):
        normalize({"version": "3.0", "flows": flows})
    with pytest.raises(CorruptFileError, match="missing"):
        normalize({"version": "3.0"})


def test_incremental_migrator_matches_normalize(monkeypatch: pytest.MonkeyPatch) -> None:
    flows = [flow("a"), flow(None), flow(None), flow("a"), 5, flow("b", plans="x")]
    top = {"current_flow": "b", "extra": 1}
    determinize(monkeypatch)
    expected = normalize({**top, "flows": copy.deepcopy(flows)})
    determinize(monkeypatch)
    m = Migrator()
    for item in copy.deepcopy(flows):
        m.add_flow(item)
    assert m.finish({**top, "flows": None}) == expected


def test_normalize_100k_flows() -> None:
    """Scale check without a clock (speed lives in benchmarks/): canonical 3.0 flows
    are taken as they are (no per-flow copy), legacy ones are rebuilt."""
    flows = {f"flow_{i:08x}": canon(f"flow_{i:08x}", extra=i) for i in range(100_000)}
    legacy = [flow(f"flow_{i:08x}", extra=i) for i in range(100_000)]
    doc, _ = normalize({"version": "3.0", "flows": dict(flows)})
    doc2, _ = normalize({"flows": legacy})
    assert len(doc["flows"]) == len(doc2["flows"]) == 100_000
    assert all(doc["flows"][fid] is flows[fid] for fid in flows)


ids = st.one_of(st.none(), st.just(""), st.integers(0, 3),
                st.sampled_from(["a", "b", "a_dup", "flow_0000beef"]))
legacy_flow = st.fixed_dictionaries(
    {}, optional={"id": ids, "name": st.one_of(st.text(max_size=3), st.integers(), st.none()),
                  "plans": st.one_of(st.lists(st.integers(), max_size=2), st.integers()),
                  "created": st.text(max_size=2), "zz": st.integers()})


@settings(max_examples=150, deadline=None)
@given(flows=st.lists(st.one_of(legacy_flow, st.integers()), max_size=12),
       current=st.one_of(st.none(), ids))
def test_any_legacy_file_normalizes_to_a_fixed_point(flows: list[Any], current: Any) -> None:
    doc, _ = normalize({"flows": flows, "current_flow_id": current})
    assert len(doc["flows"]) == sum(type(f) is dict for f in flows)
    for fid, f in doc["flows"].items():
        assert f["id"] == fid and list(f)[:6] == list(FLOW_KEYS)
        assert type(f["name"]) is str and type(f["plans"]) is list
    cur = doc["current_flow_id"]
    assert cur in doc["flows"] or (cur is None and not doc["flows"])
    again, notes = normalize(copy.deepcopy(doc))
    assert again == doc and notes == []
