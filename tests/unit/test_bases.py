"""flowd.bases: the memory of written files, rebuilt exactly from its sidecar.

Every remembered file's digests must come back equal after a reload (SIGTERM
or SIGKILL: the sidecar is appended with fdatasync, a torn tail is dropped),
and the memory must cost what changed between files, not files x flows.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pytest

from flowd import bases, flow_lines, memory_records
from flowd.bases import FileMemory
from flowd.digests import digest
from flowd.storage import memory_file


@pytest.fixture(autouse=True, params=["as written", "packed from 2"])
def _packing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test twice: as the sidecar packs (only maps of 1024 digests and more), and
    with even these small maps packed, so that a reload leaves the newest map packed
    (flowd.deferred_map) and every read of it goes through the build."""
    if request.param != "as written":
        monkeypatch.setattr(memory_records, "PACK_FROM", 2)


def _flow(fid: str, name: str, rev: int, **extra: object) -> dict:
    return {"id": fid, "name": name, "plans": [], "created": "c", "updated": "u",
            "revision": rev, **extra}


def _files(n: int) -> list[tuple[int, list[tuple[str, dict]]]]:
    """n successive store states: each renames one flow, adds one, deletes one."""
    flows = {f"f{i}": _flow(f"f{i}", f"n{i}", 0) for i in range(20)}
    out = []
    for k in range(1, n + 1):
        rev = k * 10
        flows[f"f{k}"] = _flow(f"f{k}", f"renamed{k}", rev, x_extra=k)
        flows[f"new{k}"] = _flow(f"new{k}", "new", rev)
        flows.pop(f"f{k + 10}", None)
        out.append((rev, list(flows.items())))
    return out


def _lines(items: Iterable[tuple[str, dict]]) -> dict[str, bytes]:
    """A written file's flows as the snapshot writer hands them over: their lines."""
    return {fid: flow_lines.encode(fid, f) for fid, f in items}


def _remember(mem: FileMemory, states: list) -> list[dict]:
    want = []
    for rev, items in states:
        mem.remember_written(mem.take_number(), rev, None, _lines(items), None)
        want.append({fid: digest(f) for fid, f in items})
    return want


def test_every_file_comes_back_after_a_reload(tmp_path: Path) -> None:
    mem = FileMemory(tmp_path)
    mem.load()
    want = _remember(mem, _files(8))
    tool = {fid: {k: v for k, v in f.items() if k not in ("revision", "x_extra")}
            for fid, f in _files(8)[-1][1]}
    del tool["f1"]
    tool["f2"] = {**tool["f2"], "name": "tool"}
    store = dict(_files(8)[-1][1])
    from flowd.merge import suspects_of
    delta = mem.tool_file_delta(tool, store, suspects_of(store, tool))
    mem.remember_absorbed(9, 90, None, delta)
    want.append({fid: digest(f) for fid, f in tool.items()})
    _remember(mem, _files(9)[-1:])
    want.append({fid: digest(f) for fid, f in _files(9)[-1][1]})
    for i, m in enumerate(want):
        assert mem.map_at(i) == m, i
    again = FileMemory(tmp_path)
    again.load()
    assert [e.number for e in again.entries] == [e.number for e in mem.entries]
    assert [e.own for e in again.entries] == [True] * 8 + [False, True]
    for i, m in enumerate(want):
        assert again.map_at(i) == m, i
    assert again.candidates(10) == [8]  # the tool's 9, and flowd's 9 (index 8 is the tool's)
    assert again.candidates(11) == [9]


def test_torn_tail_is_dropped_and_kept_aside(tmp_path: Path) -> None:
    mem = FileMemory(tmp_path)
    mem.load()
    want = _remember(mem, _files(3))
    path = tmp_path / memory_file.NAME
    with open(path, "ab") as f:
        f.write(b"\x05\x00\x00\x00garbage")
    again = FileMemory(tmp_path)
    again.load()
    assert [again.map_at(i) for i in range(3)] == want
    assert list(tmp_path.glob(f"{memory_file.NAME}.corrupt-*"))
    _remember(again, _files(4)[-1:])  # rewritten whole, then appended to again
    third = FileMemory(tmp_path)
    third.load()
    assert len(third.entries) == 4 and third.synced


def test_memory_costs_the_changes_not_the_files(tmp_path: Path, monkeypatch) -> None:
    """1000 files of a 2000-flow store, one change each: ~one map, not 1000."""
    flows = {f"f{i}": _flow(f"f{i}", "n", 0) for i in range(2000)}
    mem = FileMemory(tmp_path)
    mem.load()
    for k in range(1, 1001):
        flows[f"f{k}"] = _flow(f"f{k}", f"r{k}", k)
        mem.remember_written(mem.take_number(), k, None, _lines(flows.items()), {f"f{k}"})
    size = os.path.getsize(tmp_path / memory_file.NAME)
    assert mem.items < 2 * 1000 + 10
    assert size < 2000 * 40 + 1000 * 80, size


def test_oldest_files_are_forgotten_past_the_bounds(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(bases, "RETAIN_FILES", 10)
    monkeypatch.setattr(bases, "RETAIN_SECONDS", 0.0)
    mem = FileMemory(tmp_path)
    mem.load()
    want = _remember(mem, _files(30))
    assert 10 <= len(mem.entries) < 30
    kept = len(mem.entries)
    for i in range(kept):
        assert mem.map_at(i) == want[30 - kept + i]
    again = FileMemory(tmp_path)
    again.load()
    assert [again.map_at(i) for i in range(kept)] == want[30 - kept:]
    monkeypatch.setattr(bases, "MAX_BYTES", 5_000)
    _remember(mem, _files(31)[-1:])
    assert mem.bytes <= 5_000 or len(mem.entries) == 1
    assert mem.map_at(len(mem.entries) - 1) == {fid: digest(f) for fid, f in _files(31)[-1][1]}


def test_a_sidecar_that_is_not_a_regular_file_is_moved_aside(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"not flowd's")
    os.symlink(target, tmp_path / memory_file.NAME)
    mem = FileMemory(tmp_path)
    mem.load()
    assert mem.entries == [] and not mem.synced
    assert target.read_bytes() == b"not flowd's"
    assert list(tmp_path.glob(f"{memory_file.NAME}.corrupt-*"))
    _remember(mem, _files(1))
    assert (tmp_path / memory_file.NAME).is_file()
    assert not (tmp_path / memory_file.NAME).is_symlink()


def test_after_a_reload_the_newest_map_takes_the_stores_ids(tmp_path: Path,
                                                            monkeypatch) -> None:
    """The first file remembered after a start re-keys the newest map by the store's id
    strings, a slice at a time: every digest stays exact across slice boundaries, for
    the flows added since (no digest yet) and the flows gone since (kept until the
    file that drops them is remembered)."""
    monkeypatch.setattr(bases, "SHARE_SLICE", 3)
    mem = FileMemory(tmp_path)
    mem.load()
    _remember(mem, _files(2))
    again = FileMemory(tmp_path)
    again.load()
    before = dict(again.own)
    rev, items = _files(3)[-1]
    lines = {"".join(list(fid)): line for fid, line in _lines(items).items()}  # fresh strs
    kept = [fid for fid in lines if fid in before]
    again.share_ids(lines)
    assert again.own == before
    by_value = {fid: fid for fid in again.own}
    assert kept and all(by_value[fid] is fid for fid in kept)
    again.remember_written(again.take_number(), rev, None, lines, None)
    assert again.own == {fid: digest(f) for fid, f in items}


def test_a_store_keyed_by_the_memorys_ids_needs_no_sharing(tmp_path: Path) -> None:
    """The loader keys the store by the strings of :meth:`FileMemory.ids` where they
    match: note_shared sees that (and only that), and the memory stays exact."""
    from flowd.storage import lines_file
    from flowd.storage.snapshot import View, encode

    mem = FileMemory(tmp_path)
    mem.load()
    states = _files(3)
    want = _remember(mem, states)
    again = FileMemory(tmp_path)
    again.load()
    lines = _lines(states[-1][1])
    data = encode(View(lines, None, 30, 3)).whole()
    doc = lines_file.read_own(data, again.ids())
    assert doc is not None
    copies = dict(lines)  # equal ids, other objects: not shared
    again.note_shared(copies)
    assert not again._ids_shared
    again.note_shared(doc["flows"].lines)
    assert again._ids_shared
    assert all(a is b for a, b in zip(again.own, doc["flows"].lines, strict=True))
    for i, m in enumerate(want):
        assert again.map_at(i) == m, i
    after = {**dict(states[-1][1]), "f1": _flow("f1", "later", 40)}
    again.remember_written(again.take_number(), 40, None, _lines(after.items()), ["f1"])
    assert again.map_at(len(want)) == {fid: digest(f) for fid, f in after.items()}
