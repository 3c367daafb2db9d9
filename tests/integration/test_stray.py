"""Stray writers: an old tool (tests/seed_tool.py) rewrites flows.json behind flowd's back.

Neither side may lose anything: the tool's adds, changes and deletes come in,
the daemon's own changes stay, a flow changed on both sides keeps the daemon's
acknowledged version with the tool's kept in ``flows.json.merge-*``, the tool's
file is kept as ``flows.json.stray-*``, and flowd rewrites flows.json. The
scenario table against the real old-tool code is in test_stray_scenarios.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from awaiting import wait_for
from conftest import Daemon
from flowd_client import FlowClient
from seed_tool import SeedTool

SEED_TOOL = Path(__file__).resolve().parent.parent / "seed_tool.py"


def evidence(data_dir: Path, tag: str) -> list[Path]:
    return sorted(p for p in data_dir.iterdir() if p.name.startswith(f"flows.json.{tag}-"))




def read_doc(data_dir: Path) -> dict[str, Any]:
    return json.loads((data_dir / "flows.json").read_text(encoding="utf-8"))


def file_settled(c: FlowClient, data_dir: Path) -> bool:
    """flows.json is the daemon's (has meta.revision) and holds the store's revision."""
    doc = read_doc(data_dir)
    return doc["meta"].get("revision") == c.ping()["revision"]


def names(c: FlowClient) -> dict[str, str]:
    return {fid: f.name for fid, f in c.get_all_flows().items()}


def check_evidence(data_dir: Path, report: dict[str, Any], stray_bytes: bytes,
                   losers: dict[str, str]) -> None:
    """The tool's file kept byte for byte; the losing versions in the merge file."""
    strays = evidence(data_dir, "stray")
    assert [p.name for p in strays] == [report["evidence"]]
    assert strays[0].read_bytes() == stray_bytes
    files = evidence(data_dir, "merge")
    assert [p.name for p in files] == [report["aside"]]
    lost = json.loads(files[0].read_text(encoding="utf-8"))["conflicts"]
    assert {fid: sides["tool"]["name"] for fid, sides in lost.items()} == losers


def check_rewritten(data_dir: Path, want: dict[str, str]) -> None:
    """flows.json is flowd's again (3.0, revisions), flows.json.prev flowd's older file."""
    doc = read_doc(data_dir)
    assert doc["version"] == "3.0" and doc["meta"]["file_revision"] >= 1
    assert {fid: f["name"] for fid, f in doc["flows"].items()} == want
    assert all("revision" in f for f in doc["flows"].values())
    prev = json.loads((data_dir / "flows.json.prev").read_text(encoding="utf-8"))
    assert "revision" in prev["meta"]  # not the tool's file


def test_stray_writer_merged_while_daemon_runs(make_daemon, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    d: Daemon = make_daemon(data_dir, "--snapshot-interval", "0.2")
    d.start()
    with d.client(timeout=10) as c:
        ids = {n: c.add_flow(n, [{"step": n}]) for n in "ABCDE"}
        c.set_current(ids["A"])
        assert c.save(force=True) is True
        tool = SeedTool(data_dir)  # the old tool loads flows.json now
        assert set(tool.flows) == set(ids.values())
        # the daemon's clients, after the tool loaded
        c.update_flow(ids["D"], name="D-daemon")
        c.update_flow(ids["E"], name="E-daemon")
        g = c.add_flow("G-daemon")
        # the tool's edits, saved the seed's way
        s = tool.add_flow("S-stray", [{"by": "tool"}])
        tool.rename(ids["B"], "B-stray")
        assert tool.delete_flow(ids["C"])
        tool.rename(ids["E"], "E-stray")
        stray_bytes = tool.save()

        merges = wait_for(lambda: c.stats()["stray_merges"], what="the stray merge")
        report = merges[-1]
        assert (report["added"], report["updated"], report["deleted"]) == (1, 1, 1), report
        # the merge's WARNING line says how long the loop served nobody (written before
        # the stats that show the merge are answered)
        line = next(x for x in d.log.read_text().splitlines() if "stray flows.json merged" in x)
        assert re.search(r"; parsed in a child process, merged \d+\.\d\d s after flows.json "
                         r"changed; requests waited \d+\.\d\d s for it in all, at most "
                         r"\d+\.\d\d s at once$", line), line
        assert report["conflicts"] == 1 and report["conflict_ids"] == [ids["E"]]
        assert names(c) == {ids["A"]: "A", ids["B"]: "B-stray", ids["D"]: "D-daemon",
                            ids["E"]: "E-daemon", g: "G-daemon", s: "S-stray"}
        assert c.get_flow_by_id(s).plans == [{"by": "tool"}]
        assert c.get_flow_by_id(ids["B"]).plans == [{"step": "B"}]
        assert c.current_flow_id == s  # the tool's new current flow

        check_evidence(data_dir, report, stray_bytes, {ids["E"]: "E-stray"})
        wait_for(lambda: file_settled(c, data_dir), what="flows.json rewritten by flowd")
        check_rewritten(data_dir, names(c))
        before = names(c)
    assert d.stop() == 0
    d.start()
    with d.client(timeout=10) as c:
        assert names(c) == before
        assert c.stats()["stray_merges"] == []  # nothing new to merge after a clean restart
    assert len(evidence(data_dir, "stray")) == 1


def test_stray_write_while_daemon_down_is_merged_at_start(make_daemon, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    d: Daemon = make_daemon(data_dir)
    d.start()
    with d.client(timeout=10) as c:
        ids = [c.add_flow(f"f{i}") for i in range(4)]
        c.update_flow(ids[3], plans=[{"x": 1}])
    assert d.stop() == 0
    tool = SeedTool(data_dir)
    new = tool.add_flow("while-down")
    tool.rename(ids[0], "f0-renamed")
    tool.delete_flow(ids[1])
    stray_bytes = tool.save()
    d.start()
    with d.client(timeout=10) as c:
        report = c.stats()["stray_merges"][-1]
        assert (report["added"], report["updated"], report["deleted"]) == (1, 1, 1)
        assert names(c) == {ids[0]: "f0-renamed", ids[2]: "f2", ids[3]: "f3", new: "while-down"}
        assert c.get_flow_by_id(ids[3]).plans == [{"x": 1}]
        assert c.current_flow_id == new
        strays = evidence(data_dir, "stray")
        assert len(strays) == 1 and strays[0].read_bytes() == stray_bytes
        wait_for(lambda: file_settled(c, data_dir), what="flows.json rewritten by flowd")
        assert set(read_doc(data_dir)["flows"]) == {ids[0], ids[2], ids[3], new}


def test_a_file_remembered_from_its_content_after_a_kill_is_the_file_not_the_journal(
        make_daemon, tmp_path: Path) -> None:
    """SIGKILL with flowd's file N on disk, later writes only in the journal, and no
    memory of written files (or one behind N): the restart remembers N from its
    content, which must be the file's flows, not the store after the journal's replay.
    Else a tool that loaded N looks as if it had reverted flowd's later change, and
    the merge sees a conflict where there is none."""
    data_dir = tmp_path / "data"
    d: Daemon = make_daemon(data_dir, "--snapshot-interval", "3600")
    d.start()
    with d.client(timeout=10) as c:
        ids = [c.add_flow(f"f{i}") for i in range(3)]
        assert c.save(force=True) is True  # file N
        tool = SeedTool(data_dir)  # loads N
        c.update_flow(ids[0], name="flowd's")  # acknowledged: in the journal only
    d.kill()
    (data_dir / ".flows.json.memory").unlink()
    d.start()
    with d.client(timeout=10) as c:
        assert names(c)[ids[0]] == "flowd's"  # replayed
        tool.rename(ids[1], "tool's")
        tool.save()
        report = wait_for(lambda: c.stats()["stray_merges"], what="the stray merge")[-1]
        assert report["base_known"] and report["conflicts"] == 0, report
        assert names(c) == {ids[0]: "flowd's", ids[1]: "tool's", ids[2]: "f2"}


@pytest.mark.daemon_errors(r"overwritten with an unreadable file")
def test_garbage_written_over_flows_json_is_kept_and_replaced(make_daemon,
                                                              tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    d: Daemon = make_daemon(data_dir, "--snapshot-interval", "0.2")
    d.start()
    with d.client(timeout=10) as c:
        ids = [c.add_flow(f"f{i}") for i in range(3)]
        c.save(force=True)
        tmp = data_dir / "flows.json.tmp"
        tmp.write_bytes(b"\x00 not json {")
        os.replace(tmp, data_dir / "flows.json")
        wait_for(lambda: evidence(data_dir, "stray-corrupt"), what="the kept-aside garbage")
        wait_for(lambda: (data_dir / "flows.json").read_bytes()
                 .startswith(b"{") and file_settled(c, data_dir), what="flows.json written again")
        assert list(c.get_all_flows()) == ids
        assert evidence(data_dir, "stray-corrupt")[0].read_bytes() == b"\x00 not json {"
        prev = json.loads((data_dir / "flows.json.prev").read_text(encoding="utf-8"))
        assert list(prev["flows"]) == ids  # the garbage never became the older generation


def test_old_tool_that_loaded_long_ago_loses_nobody_elses_flows(make_daemon,
                                                                tmp_path: Path) -> None:
    """The tool loaded flows.json, the daemon then wrote many snapshots; the tool's
    save lacks every flow added since: those must not be read as deletions."""
    data_dir = tmp_path / "data"
    d: Daemon = make_daemon(data_dir, "--snapshot-interval", "0.05")
    d.start()
    with d.client(timeout=10) as c:
        old = [c.add_flow(f"old{i}") for i in range(3)]
        c.save(force=True)
        tool = SeedTool(data_dir)
        later = []
        for i in range(6):
            later.append(c.add_flow(f"later{i}"))
            c.save(force=True)  # a new generation each time
        c.update_flow(old[2], name="old2-daemon")
        c.save(force=True)
        mine = tool.add_flow("from-old-tool")
        tool.save()
        wait_for(lambda: c.stats()["stray_merges"], what="the stray merge")
        got = names(c)
        for fid in later:
            assert fid in got, "a flow added through the daemon was deleted by the merge"
        assert got[old[2]] == "old2-daemon"
        assert got[mine] == "from-old-tool"
        assert set(old) <= set(got)


def daemon_side(c: FlowClient, proc: subprocess.Popen) -> tuple[
        list[str], list[str], dict[str, str]]:
    """Adds, deletes and renames through the daemon while the tool process runs."""
    acked: list[str] = []
    deleted: list[str] = []
    renamed: dict[str, str] = {}
    deadline = time.monotonic() + 30
    i = 0
    while proc.poll() is None and time.monotonic() < deadline:
        acked.append(c.add_flow(f"daemon-{i}"))
        if i % 5 == 4:
            assert c.delete_flow(acked[-3])
            deleted.append(acked[-3])
            c.update_flow(acked[-2], name=f"daemon-{i - 1}-renamed")
            renamed[acked[-2]] = f"daemon-{i - 1}-renamed"
        i += 1
        time.sleep(0.01)
    return acked, deleted, renamed


def test_concurrent_old_tool_loop_loses_nothing(make_daemon, tmp_path: Path) -> None:
    """An old tool saving in a loop while the daemon writes and snapshots every 50 ms."""
    data_dir = tmp_path / "data"
    d: Daemon = make_daemon(data_dir, "--snapshot-interval", "0.05")
    d.start()
    with d.client(timeout=10) as c:
        c.add_flow("seed")
        c.save(force=True)
        proc = subprocess.Popen([sys.executable, str(SEED_TOOL), str(data_dir), "loop", "tool",
                                 "25", "0.08"], stdout=subprocess.PIPE, text=True)
        acked, deleted, renamed = daemon_side(c, proc)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        tool_flows = dict(line.split(" ", 1) for line in out.splitlines())
        assert len(tool_flows) == 25

        def settled() -> bool:
            return (not c.get_all_flows().keys().isdisjoint(tool_flows)
                    and file_settled(c, data_dir)
                    and not (data_dir / "flows.json.tmp").exists())

        wait_for(settled, timeout=15, what="the last merge")
        c.save(force=True)  # a snapshot starts only after one more stray check
        got = names(c)
        missing = [fid for fid in acked if fid not in got and fid not in deleted]
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged flows lost"
        back = [fid for fid in deleted if fid in got]
        assert not back, f"{len(back)} flows the daemon deleted came back"
        reverted = {fid: got[fid] for fid, name in renamed.items() if got[fid] != name}
        assert not reverted, f"edits through the daemon were reverted: {reverted}"
        lost_tool = [fid for fid in tool_flows if fid not in got]
        assert not lost_tool, f"{len(lost_tool)} of 25 flows of the old tool lost"
        assert c.stats()["stray_merges"]


# ------------------------------------------------------------------ in process, exact timing


def test_doctor_lists_unresolved_conflicts_until_resolved(make_daemon, tmp_path: Path) -> None:
    """A conflict stays in `flowctl doctor` (with its aside file) across a restart, until
    the flow is changed again through flowd."""
    data_dir = tmp_path / "data"
    d: Daemon = make_daemon(data_dir).start()
    with d.client(timeout=10) as c:
        a = c.add_flow("A")
        assert c.save(force=True)
        tool = SeedTool(data_dir)
        c.update_flow(a, name="A-daemon")
        tool.rename(a, "A-tool")
        tool.save()
        report = wait_for(lambda: c.stats()["stray_merges"], what="the merge")[-1]
    assert d.stop() == 0
    d.start()

    def doctor() -> dict[str, Any]:
        proc = subprocess.run([sys.executable, "-m", "flowd_client.cli", "--data-dir",
                               str(data_dir), "doctor", "--json"], capture_output=True,
                              text=True, timeout=60)
        checks = json.loads(proc.stdout)["checks"]
        return next(ch for ch in checks if ch["name"] == "stray writers")

    found = doctor()
    assert found["status"] == "warn" and found["details"] == [f"{a}: {report['aside']}"]
    with d.client(timeout=10) as c:
        c.update_flow(a, name="A-resolved")
    assert doctor()["status"] == "ok"
