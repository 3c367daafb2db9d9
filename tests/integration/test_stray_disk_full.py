"""Disk full while an old tool's rewrite of flows.json is merged: nothing is
merged, flows.json stays the tool's file, flowd says so once, and merges it all
when there is room again (ENOSPC at the IO seam, and a real full tmpfs as root)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from awaiting import wait_for
from io_faults import fault
from old_tool import Tool


def test_disk_full_during_merge_merges_nothing_then_retries(tmp_path: Path, caplog: Any) -> None:
    """ENOSPC at the IO seam while the merge writes its evidence: nothing is merged,
    flows.json stays the tool's file, flowd says so once; then it merges all."""
    from seed_tool import SeedTool

    from flowd import ops
    from flowd.config import Config
    from flowd.daemon import Daemon as InProcess

    data_dir = tmp_path / "data"
    rt = InProcess(Config(data_dir=data_dir, snapshot_interval=3600))
    rt.open()

    def write(op: str, **args: Any) -> Any:
        txn = rt.store.begin()
        result = ops.WRITES[op](txn, args)
        rt.service.commit_internal(txn)
        return result
    a, b = write("add_flow", name="A"), write("add_flow", name="B")
    assert rt.snap.write_now(rt.store).installed is not None
    tool = SeedTool(data_dir)
    write("update_flow", flow_id=a, name="A-daemon")  # acknowledged
    tool.rename(a, "A-tool")
    tool.delete_flow(b)
    tool.save()
    before = dict(rt.store.flows), rt.store.revision
    caplog.set_level("DEBUG", logger="flowd.stray")
    with fault("write", "fsync", "link"):
        for _ in range(3):
            rt.check_stray()
            rt.maybe_snapshot(time.monotonic() + 10)
    assert (dict(rt.store.flows), rt.store.revision) == before
    assert "revision" not in json.loads((data_dir / "flows.json").read_text())["meta"]
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "stray" in r.message]
    assert len(errors) == 1, [r.message for r in errors]
    rt.check_stray()
    assert {fid: f["name"] for fid, f in rt.store.flows.items()} == {a: "A-daemon"}
    report = rt.service.stats.strays[-1]
    aside = json.loads((data_dir / report["aside"]).read_text())
    assert aside["conflicts"][a]["tool"]["name"] == "A-tool"
    assert len(list(data_dir.glob("flows.json.stray-*"))) == 1
    assert rt.close()


def _mount_tmpfs(where: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    where.mkdir(parents=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


def test_real_full_tmpfs_during_merge(make_daemon, tmp_path: Path) -> None:
    """A real full disk: the merge's aside file cannot be written; nothing is merged
    until space comes back, then everything is (root only: it mounts a tmpfs)."""
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, "8m"):
        pytest.skip("needs root and `mount -t tmpfs` (run as root, e.g. in CI) to fill a real "
                    "disk")
    try:
        data_dir = mnt / "data"
        d = make_daemon(data_dir, "--snapshot-interval", "0.2").start()
        with d.client(timeout=10) as c:
            a = c.add_flow("A")
            b = c.add_flow("B")
            assert c.save(force=True)
            tool = Tool(data_dir)
            tool.do("load")
            c.update_flow(a, name="A-daemon")  # acknowledged: a conflict needs an aside file
            tool.do("rename", id=a, name="A-tool")
            tool.do("delete", id=b)
            st = os.statvfs(mnt)
            filler = mnt / "filler"
            with open(filler, "wb") as f:  # leave one page: the tool's save still fits
                f.write(b"\0" * (st.f_bavail * st.f_frsize - st.f_frsize))
            tool.do("save")
            wait_for(lambda: "No space left" in d.read_log(), timeout=15.0,
                     what="the disk-full error in the log")
            assert c.stats()["stray_merges"] == []
            assert {fid: f.name for fid, f in c.get_all_flows().items()} == {a: "A-daemon",
                                                                           b: "B"}
            filler.unlink()
            report = wait_for(lambda: c.stats()["stray_merges"], timeout=15.0, what="the merge")[-1]
            assert {fid: f.name for fid, f in c.get_all_flows().items()} == {a: "A-daemon"}
            assert report["conflict_ids"] == [a]
            tool.close()
        assert d.stop() == 0
        assert d.read_log().count("could not merge the stray") == 1
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
