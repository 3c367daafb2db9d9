"""Stray merges driven in process: flowd's Daemon without its server loop, an old
tool (tests/seed_tool.py) saving between flowd's own files. Which file the tool
loaded decides what its file's absences mean (a deletion, or a flow it never
saw), and a merge must cost the loop no more than the tool's file itself. The
running-daemon cases are in test_stray.py.
"""

from __future__ import annotations

import gc
import threading
from pathlib import Path
from typing import Any

import pytest
from seed_tool import SeedTool

from flowd import daemon as daemon_module
from flowd import ops
from flowd.bases import FileMemory
from flowd.config import Config
from flowd.daemon import Daemon as InProcess
from flowd.stray_intake import Intake


def _write(rt: InProcess, op: str, **args: Any) -> Any:
    txn = rt.store.begin()
    result = ops.WRITES[op](txn, args)
    rt.service.commit_internal(txn)
    return result


def _opened(data_dir: Path) -> InProcess:
    """flowd's Daemon on ``data_dir``, open, with no snapshot of its own in a test's time."""
    rt = InProcess(Config(data_dir=data_dir, snapshot_interval=3600))
    rt.open()
    return rt


def _names(rt: InProcess) -> dict[str, str]:
    return {fid: f["name"] for fid, f in rt.store.flows.items()}


def test_hidden_tool_file_is_not_read_as_flowds(tmp_path: Path) -> None:
    """Tool A loaded flowd's file N-1 and overwrote flowd's file N with its own N; tool B
    loaded that and wrote N+1 before flowd looked. B's file claims flowd's N, but
    descends from N-1: flowd's changes in between must be neither deleted nor reverted."""
    data_dir = tmp_path / "data"
    rt = _opened(data_dir)
    a = _write(rt, "add_flow", name="a")
    b = _write(rt, "add_flow", name="b")
    assert rt.snap.write_now(rt.store).installed is not None  # N-1
    tool_a = SeedTool(data_dir)
    c = _write(rt, "add_flow", name="c")  # the tools never see c
    _write(rt, "update_flow", flow_id=a, name="a-daemon")
    _write(rt, "delete_flow", flow_id=b)
    assert rt.snap.write_now(rt.store).installed is not None  # N
    t1 = tool_a.add_flow("t1")
    tool_a.save()  # over flowd's N, with the number N
    tool_b = SeedTool(data_dir)
    t2 = tool_b.add_flow("t2")
    tool_b.save()  # N+1
    rt.check_stray(force=True)
    assert _names(rt) == {a: "a-daemon", c: "c", t1: "t1", t2: "t2"}
    report = rt.service.stats.strays[-1]
    assert report["deleted"] == 0 and report["added"] == 2
    # the merged file then counts as a base of its own: a tool that loads it next
    assert rt.snap.write_now(rt.store).installed is not None
    tool_c = SeedTool(data_dir)
    tool_c.delete_flow(t1)
    tool_c.rename(c, "c-tool")
    tool_c.save()
    rt.check_stray(force=True)
    assert _names(rt) == {a: "a-daemon", c: "c-tool", t2: "t2"}
    assert rt.close()


def test_old_tool_saving_twice_without_reload(tmp_path: Path) -> None:
    """The seed's manager loads once and writes the same file_revision at every save."""
    data_dir = tmp_path / "data"
    rt = _opened(data_dir)
    keep = _write(rt, "add_flow", name="keep")
    doomed = _write(rt, "add_flow", name="doomed")
    assert rt.snap.write_now(rt.store).installed is not None
    tool = SeedTool(data_dir)
    later = _write(rt, "add_flow", name="later")
    assert rt.snap.write_now(rt.store).installed is not None
    first = tool.add_flow("first")
    tool.save()
    rt.check_stray(force=True)
    assert rt.snap.write_now(rt.store).installed is not None
    tool.delete_flow(doomed)
    second = tool.add_flow("second")
    tool.save()  # the same file_revision as the first save
    rt.check_stray(force=True)
    assert _names(rt) == {keep: "keep", later: "later", first: "first", second: "second"}
    assert rt.close()


def test_tool_timestamps_with_utc_offsets_merge(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    rt = _opened(data_dir)
    a = _write(rt, "add_flow", name="a")
    assert rt.snap.write_now(rt.store).installed is not None
    assert rt.snap.write_now(rt.store).installed is not None
    _write(rt, "update_flow", flow_id=a, name="a-daemon")
    tool = SeedTool(data_dir)
    tool.rename(a, "a-tool")
    new = tool.add_flow("new")
    for fid in (a, new):
        tool.flows[fid].updated = "2999-01-01T00:00:00+09:00"
    tool.save()
    rt.check_stray(force=True)
    assert _names(rt)[new] == "new"
    assert rt.close()


def test_second_tool_that_loaded_the_first_tools_file(tmp_path: Path) -> None:
    """Tool B loaded tool A's file before flowd rewrote it: A's file is B's base, so B's
    delete of a flow A added applies, and flowd's own change in between stays."""
    data_dir = tmp_path / "data"
    rt = _opened(data_dir)
    keep = _write(rt, "add_flow", name="keep")
    mine = _write(rt, "add_flow", name="mine")
    assert rt.snap.write_now(rt.store).installed is not None
    tool_a = SeedTool(data_dir)
    added = tool_a.add_flow("by A")
    tool_a.save()
    rt.check_stray()  # A merged; flowd has not rewritten flows.json yet
    tool_b = SeedTool(data_dir)  # loads A's file
    assert added in tool_b.flows
    _write(rt, "update_flow", flow_id=mine, name="mine-daemon")
    tool_b.delete_flow(added)
    tool_b.rename(keep, "keep-B")
    tool_b.save()
    rt.check_stray()
    report = rt.service.stats.strays[-1]
    assert report["base_known"] and report["deleted"] == 1 and report["conflicts"] == 0
    assert _names(rt) == {keep: "keep-B", mine: "mine-daemon"}
    assert rt.close()


def test_merge_gives_the_cyclic_gc_nothing_to_walk(tmp_path: Path) -> None:
    """A tool's file is thousands (at scale millions) of fresh acyclic objects: the
    collector must not run while it is parsed and merged (each run walked all of them:
    0.25 s of a 100k-flow merge), and the file must be gone before it runs again."""
    data_dir = tmp_path / "data"
    rt = _opened(data_dir)
    for i in range(300):
        _write(rt, "add_flow", name=f"f{i}", plans=[{"id": i, "t": [i, {"k": i}]}])
    assert rt.snap.write_now(rt.store).installed is not None
    tool = SeedTool(data_dir)
    added = tool.add_flow("from the tool")
    tool.save()
    young: list[int] = []  # objects the young generation held as each collection began

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            young.append(gc.get_count()[0])
    gc.collect()
    threshold = gc.get_threshold()
    gc.set_threshold(10)  # were the collector on, it would run every 10 allocations
    gc.callbacks.append(count)
    try:
        rt.check_stray(force=True)
    finally:
        gc.callbacks.remove(count)
        gc.set_threshold(*threshold)
    assert len(young) <= 1, f"{len(young)} collections during the merge"
    assert all(n < 500 for n in young), young  # the parsed file was not there to walk
    assert _names(rt)[added] == "from the tool"
    assert rt.close()


def test_a_restart_gives_the_cyclic_gc_nothing_to_walk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A restart builds the memory of written files and the store (at scale millions of
    acyclic objects): no collection may run while either loads, nor at the pause's end
    (one there walked a million flows: 44 ms of the start; one inside the sidecar's
    decode, 15 ms). Frozen before the GC is back, they are never walked."""
    data_dir = tmp_path / "data"
    rt = _opened(data_dir)
    for i in range(300):
        _write(rt, "add_flow", name=f"f{i}", plans=[{"id": i, "t": [i, {"k": i}]}])
    assert rt.snap.write_now(rt.store).installed is not None
    assert rt.close()
    loading: list[str] = []  # what is loading now
    ran: list[str] = []  # what was loading as each collection began

    def watched(name: str, load: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            loading.append(name)
            try:
                return load(*args, **kwargs)
            finally:
                loading.pop()
        return run

    monkeypatch.setattr(FileMemory, "load", watched("memory", FileMemory.load))
    monkeypatch.setattr(daemon_module, "recover", watched("store", daemon_module.recover))

    def began(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and loading:
            ran.append(loading[-1])
    threshold = gc.get_threshold()
    gc.set_threshold(10)  # were the collector on, it would run every 10 allocations
    gc.callbacks.append(began)
    try:
        rt = _opened(data_dir)
    finally:
        gc.callbacks.remove(began)
        gc.set_threshold(*threshold)
    assert ran == [], f"collections while loading: {ran}"
    assert len(rt.store) == 300 and rt.memory.own_rev >= 0
    assert rt.close()


def test_an_intake_that_breaks_leaves_the_merge_to_the_daemon(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A real child parses the tool's file, but reading its output in fails (a bug, a
    short write): the daemon parses the held file itself, and nothing is left pending
    (no snapshot would be written while it is)."""
    data_dir = tmp_path / "data"
    rt = _opened(data_dir)
    mine = _write(rt, "add_flow", name="mine")
    assert rt.snap.write_now(rt.store).installed is not None
    tool = SeedTool(data_dir)
    added = tool.add_flow("from the tool")
    tool.save()
    parsed = threading.Event()
    rt.strays.on_ready = parsed.set

    def broken(self: Intake) -> bool:
        raise KeyError("broken")
    monkeypatch.setattr(Intake, "step", broken)
    rt.check_stray(force=True)
    assert rt.strays.busy and _names(rt) == {mine: "mine"}  # parsing, not merged yet
    assert parsed.wait(30)
    rt.strays.step()
    assert not rt.strays.busy
    assert _names(rt) == {mine: "mine", added: "from the tool"}
    assert "its output could not be read in: KeyError('broken')" in caplog.text
    assert rt.close()


def test_a_tool_file_is_remembered_with_flowds_changes_it_holds(tmp_path: Path) -> None:
    """Tool A makes the same edit flowd made after its last file: A's copy is flowd's
    live flow, and the memory must record A's file as holding that version, not the
    one of flowd's file. Otherwise tool B, which loaded A's file and left the flow
    alone, looks as if it had changed it: a conflict nobody made."""
    data_dir = tmp_path / "data"
    rt = _opened(data_dir)
    x = _write(rt, "add_flow", name="x")
    assert rt.snap.write_now(rt.store).installed is not None
    tool_a = SeedTool(data_dir)
    _write(rt, "update_flow", flow_id=x, name="x2")  # after flowd's last file
    live = rt.store.flows[x]
    tool_a.flows[x].name, tool_a.flows[x].updated = live["name"], live["updated"]  # the same
    tool_a.add_flow("a")
    tool_a.save()
    rt.check_stray(force=True)
    tool_b = SeedTool(data_dir)  # A's file: flowd has not rewritten flows.json yet
    assert tool_b.flows[x].name == "x2"
    _write(rt, "update_flow", flow_id=x, name="x3")
    tool_b.add_flow("b")
    tool_b.save()
    rt.check_stray(force=True)
    report = rt.service.stats.strays[-1]
    assert report["base_known"] and report["conflicts"] == 0, report
    assert _names(rt)[x] == "x3"
    assert rt.close()
