"""The snapshot writer's replica of the store: the store's change log applied to it
must give exactly the store's flows, in the store's order, whatever the changes."""

from __future__ import annotations

from typing import Any

from flowd import flow_lines
from flowd.snapshotter import Snapshotter
from flowd.store import Store


def flow(fid: str, name: str, rev: int = 0) -> dict[str, Any]:
    return {"id": fid, "name": name, "plans": [], "created": "2024-05-01T09:00:00",
            "updated": "2024-05-01T09:00:00", "revision": rev}


def loaded(*ids: str) -> Store:
    store = Store()
    store.load({"version": "3.0", "meta": {"revision": 0}, "current_flow_id": None,
                "flows": {fid: flow(fid, fid) for fid in ids}})
    return store


def apply(store: Store, *changes: tuple[str, str, dict[str, Any] | None]) -> None:
    store.apply_record({"rev": store.revision + 1, "ts": "t",
                        "changes": [list(c) for c in changes], "current": None})


def snapshot_items(snap: Snapshotter, store: Store) -> list[tuple[str, Any]]:
    view = snap.view(store)
    view.catch_up()  # what the snapshot thread does first
    assert view.size == len(store.flows)
    return [(fid, flow_lines.decode(fid, line)) for fid, line in view.lines.items()]


def test_replica_follows_adds_updates_deletes_and_readds_in_order() -> None:
    store = loaded("a", "b", "c")
    snap = Snapshotter(files=None, journal=None, interval=1.0,  # type: ignore[arg-type]
                       max_journal_bytes=64 << 20)
    snap.prime(store)
    apply(store, ("add_flow", "d", flow("d", "d", 1)))
    apply(store, ("delete_flow", "b", None), ("rename_flow", "a", flow("a", "A", 2)))
    apply(store, ("delete_flow", "d", None))
    apply(store, ("add_flow", "b", flow("b", "again", 4)))  # a deleted id, added again: last
    assert snapshot_items(snap, store) == list(store.flows.items())
    assert [fid for fid, _ in store.flows.items()] == ["a", "c", "b"]
    apply(store, ("add_flow", "e", flow("e", "e", 5)), ("delete_flow", "c", None))
    assert snapshot_items(snap, store) == list(store.flows.items())


def test_changes_are_handed_over_once_and_a_new_load_copies_again() -> None:
    store = loaded("a")
    snap = Snapshotter(files=None, journal=None, interval=1.0,  # type: ignore[arg-type]
                       max_journal_bytes=64 << 20)
    assert store.changes is None  # nobody keeps a replica: nothing is logged
    assert snapshot_items(snap, store) == list(store.flows.items())  # first view primes
    apply(store, ("add_flow", "b", flow("b", "b", 1)))
    assert store.changes == [("b", store.flows.lines["b"])]
    assert snapshot_items(snap, store) == list(store.flows.items())
    assert store.changes == []
    store.load({"version": "3.0", "meta": {"revision": 9}, "current_flow_id": None,
                "flows": {"z": flow("z", "z")}})
    assert snapshot_items(snap, store) == [("z", store.flows["z"])]
