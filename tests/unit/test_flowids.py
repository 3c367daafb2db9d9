"""Content-derived ids: a flow without an id gets the same id every time it is loaded."""

from __future__ import annotations

import copy

from flowd_client.flowids import Deriver, candidate, content_bytes

from flowd.storage.migrate import normalize

LEGACY = {"flows": [{"name": "A", "plans": [{"t": 1}]}, {"name": "B"},
                    {"name": "A", "plans": [{"t": 1}]}, {"id": "kept", "name": "C"}]}


def test_the_same_file_gets_the_same_ids_every_time() -> None:
    first, _ = normalize(copy.deepcopy(LEGACY))
    second, _ = normalize(copy.deepcopy(LEGACY))
    assert list(first["flows"]) == list(second["flows"])
    ids = list(first["flows"])
    assert ids[3] == "kept" and len(set(ids)) == 4
    assert all(i.startswith("flow_") and len(i) == 13 for i in ids[:3])


def test_equal_contents_get_successive_candidates() -> None:
    doc, notes = normalize(copy.deepcopy(LEGACY))
    a, _, a2, _ = doc["flows"].values()
    assert content_bytes(a) == content_bytes(a2) and a["id"] != a2["id"]
    assert f"flow #1 had no id: assigned {a['id']}" in notes


def test_timestamps_and_revision_are_not_content() -> None:
    """The loader fills missing timestamps with "now": they cannot decide the id."""
    one, _ = normalize({"flows": [{"name": "x", "created": "2020-01-01T00:00:00"}]})
    two, _ = normalize({"flows": [{"name": "x", "revision": 9}]})
    assert list(one["flows"]) == list(two["flows"])
    three, _ = normalize({"flows": [{"name": "x", "plans": [{"other": True}]}]})
    assert list(three["flows"]) != list(one["flows"])


def test_a_taken_id_moves_on_to_the_next_candidate() -> None:
    flow = {"name": "n", "plans": []}
    first = Deriver().derive(flow, lambda fid: True)
    second = Deriver().derive(flow, lambda fid: fid != first)
    assert second != first and second.startswith("flow_")


def test_many_equal_flows_cost_one_candidate_each() -> None:
    """A hostile file of 20k equal flows: every flow still gets a unique id, and the
    deriver continues where the last equal one stopped (no quadratic probing)."""
    tried: list[str] = []
    d = Deriver()
    for _ in range(20_000):
        d.derive({"name": "same"}, lambda fid: tried.append(fid) or True)
    assert len(tried) == len(set(tried)) == 20_000


def test_candidate_zero_is_the_plain_content_hash() -> None:
    import hashlib

    flow = {"name": "프로젝트", "plans": [{"a": [1, 2.5]}], "zz": None}
    digest = hashlib.sha256(content_bytes(flow))
    assert candidate(digest, 0) == "flow_" + digest.hexdigest()[:8]
    assert candidate(digest, 1) != candidate(digest, 0)
