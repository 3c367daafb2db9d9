"""A restarted daemon keys its store by the memory of written files' id strings (one
copy of each id), and merges an old tool's file against a base from before the
restart exactly: the tool's edits and deletions land, flowd's own changes stay."""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Any

import pytest
from seed_tool import SeedTool

from flowd import ops
from flowd.config import Config
from flowd.daemon import Daemon as InProcess
from flowd.memory_records import PACK_FROM


def _write(rt: InProcess, op: str, **args: Any) -> Any:
    txn = rt.store.begin()
    result = ops.WRITES[op](txn, args)
    rt.service.commit_internal(txn)
    return result


def _open(data_dir: Path) -> InProcess:
    rt = InProcess(Config(data_dir=data_dir, snapshot_interval=3600))
    rt.open()
    return rt


def test_a_merge_after_a_restart_with_shared_ids_loses_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    rt = _open(data_dir)
    ids = [_write(rt, "add_flow", name=f"n{i}") for i in range(50)]
    assert rt.snap.write_now(rt.store).installed is not None
    assert rt.close()
    tool = SeedTool(data_dir)  # loads the file flowd wrote before the restart

    rt = _open(data_dir)
    assert rt.memory._ids_shared
    assert all(map(operator.is_, rt.memory.own, rt.store.flows.lines))
    _write(rt, "update_flow", flow_id=ids[1], name="flowd's")  # changed by flowd only
    gone = _write(rt, "add_flow", name="flowd's new")
    assert rt.snap.write_now(rt.store).installed is not None
    tool.rename(ids[2], "tool's")  # changed by the tool only
    tool.delete_flow(ids[3])  # deleted by the tool, unchanged by flowd
    tool.rename(ids[1], "tool's too")  # changed by both: flowd's stays
    added = tool.add_flow("tool's new")
    tool.save()
    rt.check_stray(force=True)
    names = {fid: f["name"] for fid, f in rt.store.flows.items()}
    assert names[ids[1]] == "flowd's" and names[ids[2]] == "tool's"
    assert ids[3] not in names and names[added] == "tool's new" and names[gone] == "flowd's new"
    report = rt.service.stats.strays[-1]
    assert report["base_known"] and report["conflicts"] == 1 and report["deleted"] == 1
    assert rt.close()


@pytest.mark.parametrize("settled", [True, False])
def test_a_restart_with_a_packed_map_merges_exactly(tmp_path: Path, settled: bool) -> None:
    """Past 1024 flows the sidecar packs the newest map, and a restart leaves it packed
    (flowd.deferred_map): the loop builds it after ready, and a stray merge that comes
    first (``settled`` False) builds it at once. Either way the store is keyed by the
    memory's strings and the tool's edits merge as against the map built at start."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    (data_dir / "flows.json").write_text('{"version": "3.0", "flows": {}}')
    seed = SeedTool(data_dir)  # a store an old tool made: the first start remembers it whole
    ids = [seed.add_flow(f"n{i}") for i in range(PACK_FROM + 100)]
    seed.save()
    rt = _open(data_dir)
    assert rt.close()
    tool = SeedTool(data_dir)

    rt = _open(data_dir)
    assert rt.memory.settling and rt.memory._ids_shared
    for _ in range(PACK_FROM):  # bounded: a slice of 8192 per step
        if not settled or not rt.memory.settling:
            break
        rt.index_names()
    assert rt.memory.settling is not settled
    if settled:  # built by the loop's steps: keyed by the store's own strings
        assert all(map(operator.is_, rt.memory.own, rt.store.flows.lines))
    tool.rename(ids[2], "tool's")
    tool.delete_flow(ids[3])
    tool.save()
    rt.check_stray(force=True)
    assert not rt.memory.settling
    names = {fid: f["name"] for fid, f in rt.store.flows.items()}
    assert names[ids[2]] == "tool's" and ids[3] not in names and names[ids[4]] == "n4"
    report = rt.service.stats.strays[-1]
    assert report["base_known"] and report["conflicts"] == 0 and report["deleted"] == 1
    assert rt.close()
