"""A restarted daemon keys its store by the memory of written files' id strings (one
copy of each id), and merges an old tool's file against a base from before the
restart exactly: the tool's edits and deletions land, flowd's own changes stay."""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Any

from seed_tool import SeedTool

from flowd import ops
from flowd.config import Config
from flowd.daemon import Daemon as InProcess


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
