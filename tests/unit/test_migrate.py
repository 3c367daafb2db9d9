"""normalize(), flow by flow: ids, names, plans, timestamps, values kept aside.

The rules (DESIGN.md "Migration", the seed's edge cases) are binding: one test
pins each. Document-level rules are in test_migrate_document.py."""

from __future__ import annotations

import re
from typing import Any

import pytest
from migrate_builders import T0, canon, determinize, flow

from flowd.storage import flow_layouts, migrate
from flowd.storage.migrate import FLOW_KEYS, normalize

ID_RE = re.compile(r"^flow_[0-9a-f]{8}$")


@pytest.fixture
def fixed(monkeypatch: pytest.MonkeyPatch) -> None:
    determinize(monkeypatch)


def test_flow_keys_in_canonical_order_and_defaults() -> None:
    raw = {"flows": [{"x": 1, "updated": T0, "plans": [], "name": "n", "id": "a",
                      "created": T0, "y": 2}]}
    doc, _ = normalize(raw)
    got = doc["flows"]["a"]
    assert list(got) == [*FLOW_KEYS, "x", "y"]
    assert got["revision"] == 0


def test_missing_id_gets_fresh_unique_id() -> None:
    doc, notes = normalize({"flows": [flow(None) for _ in range(50)]})
    ids = list(doc["flows"])
    assert len(set(ids)) == 50
    assert all(ID_RE.match(i) for i in ids)
    assert all(doc["flows"][i]["id"] == i for i in ids)
    assert f"flow #1 had no id: assigned {ids[0]}" in notes


@pytest.mark.parametrize("bad", [None, "", 17, ["x"]])
def test_invalid_id_gets_fresh_id_and_old_value_kept(bad: object) -> None:
    doc, notes = normalize({"flows": [flow(None, id=bad)]})
    (fid,) = doc["flows"]
    assert ID_RE.match(fid)
    kept = doc["flows"][fid].get("id_invalid")
    assert kept == (bad if bad not in (None, "") else None)
    assert any("flow #1" in n for n in notes)


def test_duplicate_ids_keep_first_and_rename_later(fixed: None) -> None:
    flows = [flow("a", name=str(i)) for i in range(4)] + [flow("a_dup2", name="x")]
    doc, notes = normalize({"flows": flows})
    assert list(doc["flows"]) == ["a", "a_dup", "a_dup2", "a_dup3", "a_dup2_dup"]
    assert [f["name"] for f in doc["flows"].values()] == ["0", "1", "2", "3", "x"]
    assert "duplicate id a renamed a_dup" in notes
    assert "duplicate id a renamed a_dup2" in notes


def test_duplicate_rename_takes_first_free_suffix() -> None:
    doc, _ = normalize({"flows": [flow("a_dup"), flow("a"), flow("a")]})
    assert list(doc["flows"]) == ["a_dup", "a", "a_dup2"]


def test_missing_or_null_plans_become_empty_list() -> None:
    raw = {"flows": [{"id": "a", "name": "n"}, flow("b", plans=None)]}
    doc, notes = normalize(raw)
    assert doc["flows"]["a"]["plans"] == [] and doc["flows"]["b"]["plans"] == []
    assert "flow a had no plans: set to []" in notes
    assert "plans_invalid" not in doc["flows"]["b"]


def test_missing_name_becomes_empty_string() -> None:
    raw = {"flows": [{"id": "a", "plans": [], "created": T0, "updated": T0}]}
    doc, notes = normalize(raw)
    assert doc["flows"]["a"]["name"] == ""
    assert "flow a had no name: set to ''" in notes


def test_name_scalar_is_coerced_and_container_kept_aside() -> None:
    raw = {"flows": [flow("a", name=5), flow("b", name=["x"]), flow("c", name=True)]}
    doc, notes = normalize(raw)
    assert doc["flows"]["a"]["name"] == "5"
    assert doc["flows"]["b"]["name"] == "" and doc["flows"]["b"]["name_invalid"] == ["x"]
    assert doc["flows"]["c"]["name"] == "True"
    assert any("coerced to '5'" in n for n in notes)


def test_missing_created_updated_get_now(fixed: None) -> None:
    doc, notes = normalize({"flows": [{"id": "a", "name": "n", "plans": [],
                                       "updated": 5}]})
    got = doc["flows"]["a"]
    assert got["created"] == "NOW" and got["updated"] == "NOW"
    assert got["updated_invalid"] == 5
    assert "flow a had no created: set to now" in notes


def test_now_is_the_seed_timestamp_format() -> None:
    created = normalize({"flows": [{"id": "a"}]})[0]["flows"]["a"]["created"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$", created)


def test_id_field_disagreeing_with_key_key_wins() -> None:
    raw = {"version": "3.0", "flows": {"a": canon("b")}}
    doc, notes = normalize(raw)
    assert list(doc["flows"]) == ["a"] and doc["flows"]["a"]["id"] == "a"
    assert "flow a: id field 'b' disagreed with its key: key wins" in notes


def test_plans_not_a_list_kept_aside() -> None:
    raw = {"version": "3.0", "flows": {"a": canon("a", plans={"p": 1})}}
    doc, notes = normalize(raw)
    got = doc["flows"]["a"]
    assert got["plans"] == [] and got["plans_invalid"] == {"p": 1}
    assert "flow a: plans of type object kept as plans_invalid, plans set to []" in notes


def test_stash_never_overwrites_an_existing_key() -> None:
    raw = {"version": "3.0", "flows": {"a": canon("a", plans=3, plans_invalid="old")}}
    got = normalize(raw)[0]["flows"]["a"]
    assert got["plans_invalid"] == "old" and got["plans_invalid_2"] == 3


def test_non_dict_flow_entries_kept_under_flows_invalid() -> None:
    doc, notes = normalize({"version": "3.0", "flows": {"a": canon("a"), "b": "junk"}})
    assert list(doc["flows"]) == ["a"] and doc["flows_invalid"] == {"b": "junk"}
    doc, _ = normalize({"flows": [flow("a"), 7, None]})
    assert doc["flows_invalid"] == {"#2": 7, "#3": None}


def test_revision_not_int_kept_aside() -> None:
    doc, _ = normalize({"version": "3.0", "flows": {"a": canon("a") | {"revision": "7"}}})
    got = doc["flows"]["a"]
    assert got["revision"] == 0 and got["revision_invalid"] == "7"


def test_values_are_taken_not_copied() -> None:
    plans: list[Any] = [{"p": 1}]
    raw = {"version": "3.0", "flows": {"a": canon("a", plans=plans)}}
    assert normalize(raw)[0]["flows"]["a"]["plans"] is plans


def test_notes_are_bounded() -> None:
    doc, notes = normalize({"flows": [{"id": f"f{i}"} for i in range(1000)]})
    assert len(doc["flows"]) == 1000
    assert len(notes) == 1 + migrate.MAX_NOTES + 1
    assert re.match(r"^\.\.\. and \d+ more$", notes[-1])


@pytest.mark.parametrize("form", ["list", "dict"])
def test_an_old_tools_flows_come_out_as_a_rebuilt_flow_would(form: str) -> None:
    """The old tools' five-key layout is completed in place (no new dict per flow): the
    result must be what the general rebuild gives, key order and all, and a flow of
    that layout with a bad value must still be repaired with its note."""
    good = [{"id": f"f{i}", "name": f"n{i}", "plans": [{"id": i}], "created": T0,
             "updated": T0} for i in range(3)]
    bad = {"id": "f9", "name": ["not", "a", "name"], "plans": [], "created": T0,
           "updated": T0}
    items = [*good, bad, {**good[0], "id": "f0"}]  # a duplicate id too
    want = [flow_layouts.rebuilt(None, dict(f), {}) for f in good]
    raw: dict[str, Any] = {"flows": [dict(f) for f in items]} if form == "list" else \
        {"version": "3.0", "flows": {f"f{i}": dict(f) for i, f in enumerate(items[:4])}}
    doc, notes = normalize(raw)
    got = doc["flows"]
    for w in want:
        assert got[w["id"]] == w and list(got[w["id"]]) == [*FLOW_KEYS]
    assert got["f9" if form == "list" else "f3"]["name"] == ""
    assert any("name" in note for note in notes)
    assert len(got) == (5 if form == "list" else 4)
