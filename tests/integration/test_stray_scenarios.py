"""The old tools next to a real daemon: a scenario table with the real pre-daemon code.

Each scenario starts flowd on a fresh data dir holding flows A, B, C, drives
the seed's FlowManagerUnified (tests/seed_tool.py) in its own process (with
its own ``TZ`` where that matters) and the real client, and then asserts the
exact final store: ids, names, plans and the current flow. Every acknowledged
write is in that expectation, so a lost one fails the scenario.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from awaiting import wait_for
from conftest import Daemon
from flowd_client import FlowClient
from old_tool import Tool

PLANS = {"A": [{"id": 1, "title": "a"}], "B": [{"id": 1, "title": "b"}],
         "C": [{"id": 1, "title": "c"}]}
State = dict[str, tuple[str, list]]


@dataclass
class Run:
    """A scenario's world: the daemon, a client, the starting flows' ids."""

    d: Daemon
    c: FlowClient
    ids: dict[str, str]
    data_dir: Path

    def tool(self, tz: str | None = None) -> Tool:
        t = Tool(self.data_dir, tz)
        self.tools.append(t)
        return t

    def merges(self, n: int) -> list[dict[str, Any]]:
        return wait_for(lambda: len(got := self.c.stats()["stray_merges"]) >= n and got,
                        timeout=15.0, what=f"{n} stray merges")

    def reconnect(self) -> None:
        self.c.close()
        self.c = self.d.client(timeout=10)

    def __post_init__(self) -> None:
        self.tools: list[Tool] = []
        #: checks of the merge reports, run after the store itself was compared
        self.later: list[Callable[[], None]] = []


def start(make_daemon: Any, tmp_path: Path) -> Run:
    data_dir = tmp_path / "data"
    d = make_daemon(data_dir, "--snapshot-interval", "0.2").start()
    c = d.client(timeout=10)
    ids = {n: c.add_flow(n, PLANS[n]) for n in "ABC"}
    c.set_current(ids["A"])
    assert c.save(force=True) is True
    return Run(d, c, ids, data_dir)


def _check(ok: bool, report: Any) -> None:
    assert ok, report


def base_state(run: Run) -> State:
    return {run.ids[n]: (n, PLANS[n]) for n in "ABC"}


def final_state(c: FlowClient) -> tuple[State, str | None]:
    return {fid: (f.name, f.plans) for fid, f in c.get_all_flows().items()}, c.current_flow_id


def merge_file(run: Run, report: dict[str, Any]) -> dict[str, Any]:
    return json.loads((run.data_dir / report["aside"]).read_text(encoding="utf-8"))


# ------------------------------------------------------------------ scenarios
# Each returns the exact store it expects, and its current flow.


def idle(run: Run) -> tuple[State, str | None]:
    """The daemon idle; the tool deletes, adds and renames (main dropped the delete)."""
    a, b = run.ids["A"], run.ids["B"]
    t = run.tool()
    t.do("load")
    t.do("delete", id=b)
    new = t.do("add", name="T", plans=[{"id": 9}])
    t.do("rename", id=a, name="A-tool")
    t.do("save")
    report = run.merges(1)[-1]
    run.later.append(lambda: _check((report["deleted"], report["added"], report["updated"])
                                    == (1, 1, 1), report))
    want = base_state(run)
    del want[b]
    want[a] = ("A-tool", PLANS["A"])
    want[new] = ("T", [{"id": 9}])
    return want, new


def busy(run: Run) -> tuple[State, str | None]:
    """Writers rename and delete their own flows while the tool loads, edits and saves."""
    ws = [run.c.add_flow(f"W{i}") for i in range(6)]
    run.c.set_current(run.ids["A"])
    assert run.c.save(force=True)
    names: dict[str, str] = {w: f"W{i}" for i, w in enumerate(ws)}
    stop = threading.Event()

    def write() -> None:
        with run.d.client(timeout=10) as c:
            assert c.delete_flow(ws[5])
            names.pop(ws[5])
            i = 0
            while not stop.is_set() and i < 5000:
                w = ws[i % 5]
                c.update_flow(w, name=f"W{i % 5}-{i}")
                names[w] = f"W{i % 5}-{i}"
                i += 1
    writer = threading.Thread(target=write)
    t = run.tool()
    t.do("load")
    writer.start()
    t.do("delete", id=run.ids["B"])
    new = t.do("add", name="T")
    t.do("rename", id=run.ids["A"], name="A-tool")
    t.do("set_plans", id=ws[0], plans=[{"tool": 1}])  # a flow the writers rename meanwhile
    wait_for(lambda: len(names) == 5 and run.c.stats()["snapshot"]["count"] >= 4,
             timeout=15.0, what="writes and snapshots while the tool holds its copy")
    t.do("save")
    report = run.merges(1)[-1]
    run.later.append(lambda: _check(ws[0] in report["conflict_ids"], report))
    stop.set()
    writer.join(30)
    want = base_state(run)
    del want[run.ids["B"]]
    want[run.ids["A"]] = ("A-tool", PLANS["A"])
    want[new] = ("T", [])
    want.update({w: (n, []) for w, n in names.items()})
    return want, new


def _tz(run: Run, tz: str) -> tuple[State, str | None]:
    a, b = run.ids["A"], run.ids["B"]
    t = run.tool(tz)
    t.do("load")
    run.c.update_flow(b, name="B-daemon")
    new = t.do("add", name="T")
    t.do("rename", id=a, name="A-tool")
    t.do("save")
    report = run.merges(1)[-1]
    run.later.append(lambda: _check(report["conflicts"] == 0, report))
    want = base_state(run)
    want[a], want[b], want[new] = ("A-tool", PLANS["A"]), ("B-daemon", PLANS["B"]), ("T", [])
    return want, new


def tz_behind(run: Run) -> tuple[State, str | None]:
    """The tool's clock 9 h behind the daemon's (main dropped its added flow)."""
    return _tz(run, "AAA+9")


def tz_ahead(run: Run) -> tuple[State, str | None]:
    """9 h ahead, and a stale edit of a flow the daemon changed: the daemon's stays."""
    a = run.ids["A"]
    t = run.tool("BBB-9")
    t.do("load")
    run.c.update_flow(a, name="A-daemon")
    new = t.do("add", name="T")
    t.do("rename", id=a, name="A-tool")
    t.do("save")
    report = run.merges(1)[-1]
    run.later.append(lambda: _check(report["conflict_ids"] == [a], report))
    run.later.append(lambda: _check(
        merge_file(run, report)["conflicts"][a]["tool"]["name"] == "A-tool", None))
    run.later.append(lambda: _check(run.c.stats()["stray_conflicts"] == [
        {"flow_id": a, "file": report["aside"], "revision": report["revision"]}], None))
    want = base_state(run)
    want[a], want[new] = ("A-daemon", PLANS["A"]), ("T", [])
    return want, new


def _restart(run: Run, kill: bool) -> tuple[State, str | None]:
    a, b, c = run.ids["A"], run.ids["B"], run.ids["C"]
    t = run.tool()
    t.do("load")
    assert run.c.delete_flow(a)  # acknowledged: must stay deleted
    assert run.c.save(force=True)  # flowd's newer file is on disk: the tool's base is older
    if kill:
        run.d.kill()
    else:
        assert run.d.stop() == 0
    run.d.start()
    run.reconnect()
    t.do("delete", id=b)
    t.do("save")
    report = run.merges(1)[-1]
    run.later.append(lambda: _check(report["deleted"] == 1 and report["base_known"], report))
    return {c: ("C", PLANS["C"])}, c


def sigterm(run: Run) -> tuple[State, str | None]:
    """flowd stopped and started between the tool's load and save (main undid A's delete)."""
    return _restart(run, kill=False)


def sigkill(run: Run) -> tuple[State, str | None]:
    return _restart(run, kill=True)


def fifty_files_old(run: Run) -> tuple[State, str | None]:
    """The tool's copy is 50 flowd files old; flowd deleted C meanwhile and renamed B,
    which the tool's old copy edits too (main dropped that edit without a word)."""
    a, b, c = run.ids["A"], run.ids["B"], run.ids["C"]
    gone = run.c.add_flow("D")
    run.c.set_current(a)
    assert run.c.save(force=True)
    t = run.tool()
    t.do("load")
    t.do("delete", id=gone)
    assert run.c.delete_flow(c)
    xs = []
    for i in range(50):
        xs.append(run.c.add_flow(f"X{i}"))
        assert run.c.save(force=True)
    run.c.update_flow(b, name="B-daemon")
    t.do("set_plans", id=b, plans=[{"tool": "old copy"}])  # the old code never bumps updated
    t.do("rename", id=a, name="A-tool")
    t.do("save")
    report = run.merges(1)[-1]
    run.later.append(lambda: _check(report["conflict_ids"] == [b] and report["updated"] == 1,
                                    report))
    run.later.append(lambda: _check(report["deleted"] == 1, report))
    want = {a: ("A-tool", PLANS["A"]), b: ("B-daemon", PLANS["B"]),
            **{x: (f"X{i}", []) for i, x in enumerate(xs)}}
    return want, xs[-1]


def two_tools(run: Run) -> tuple[State, str | None]:
    """Two tools save 200 ms apart: both merged, nothing of either lost."""
    t1, t2 = run.tool(), run.tool()
    t1.do("load")
    t2.do("load")
    t1.do("delete", id=run.ids["A"])
    n1 = t1.do("add", name="T1")
    t2.do("delete", id=run.ids["B"])
    n2 = t2.do("add", name="T2")
    t1.do("save")
    time.sleep(0.2)
    t2.do("save")
    run.merges(2)
    return {run.ids["C"]: ("C", PLANS["C"]), n1: ("T1", []), n2: ("T2", [])}, n2


def future_updated(run: Run) -> tuple[State, str | None]:
    """A flow whose ``updated`` is in the future; a stale copy that never touched it
    (main reverted the acknowledged rename)."""
    t1 = run.tool()
    t1.do("load")
    f = t1.do("add", name="F")
    t1.do("set_updated", id=f, value="2999-01-01T00:00:00")
    t1.do("save")
    run.merges(1)
    wait_for(lambda: run.c.get_flow_by_id(f), timeout=15.0, what="F in the store")
    t2 = run.tool()
    t2.do("load")
    run.c.update_flow(f, name="F-daemon")
    for i in range(4):  # flowd writes on: the copy t2 loaded is no longer among its newest
        run.c.add_flow(f"later{i}")
        assert run.c.save(force=True)
    run.c.set_current(run.ids["A"])
    n2 = t2.do("add", name="T2")
    t2.do("save")
    report = run.merges(2)[-1]
    run.later.append(lambda: _check(report["conflicts"] == 0, report))
    want = base_state(run)
    want[f], want[n2] = ("F-daemon", []), ("T2", [])
    want.update({fid: (f.name, []) for fid, f in run.c.get_all_flows().items()
                 if f.name.startswith("later")})
    assert len(want) == 9
    return want, n2


def plans_no_bump(run: Run) -> tuple[State, str | None]:
    """Plans edited without touching ``updated``: taken, or a reported conflict."""
    a, b = run.ids["A"], run.ids["B"]
    t = run.tool()
    t.do("load")
    run.c.update_flow(a, name="A-daemon")
    t.do("set_plans", id=a, plans=[{"tool": 1}])
    t.do("set_plans", id=b, plans=[{"tool": 2}])
    t.do("save")
    report = run.merges(1)[-1]
    run.later.append(lambda: _check(report["conflict_ids"] == [a] and report["updated"] == 1,
                                    report))
    run.later.append(lambda: _check(
        merge_file(run, report)["conflicts"][a]["tool"]["plans"] == [{"tool": 1}], None))
    want = base_state(run)
    want[a], want[b] = ("A-daemon", PLANS["A"]), ("B", [{"tool": 2}])
    return want, a


def unknown_base(run: Run) -> tuple[State, str | None]:
    """A number flowd never wrote: additions and edits only, the delete reported by id."""
    a, b = run.ids["A"], run.ids["B"]
    t = run.tool()
    t.do("load")
    t.do("file_revision", value=987_654)
    t.do("delete", id=a)
    t.do("rename", id=b, name="B-tool")
    new = t.do("add", name="T")
    t.do("save")
    report = run.merges(1)[-1]
    run.later.append(lambda: _check(report["base"] is None and not report["base_known"], report))
    run.later.append(lambda: _check(report["skipped_deletion_ids"] == [a], report))
    run.later.append(lambda: _check(merge_file(run, report)["skipped_deletions"] == [a], None))
    want = base_state(run)
    want[b], want[new] = ("B-tool", PLANS["B"]), ("T", [])
    return want, new


SCENARIOS = [idle, busy, tz_behind, tz_ahead, sigterm, sigkill, fifty_files_old, two_tools,
             future_updated, plans_no_bump, unknown_base]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
def test_old_tool_scenario(make_daemon, tmp_path: Path, monkeypatch: Any,
                           scenario: Callable[[Run], tuple[State, str | None]]) -> None:
    monkeypatch.setenv("TZ", "UTC0")  # the daemon's clock; tools set their own
    run = start(make_daemon, tmp_path)
    try:
        want, current = scenario(run)
        got, got_current = final_state(run.c)
        assert got == want
        assert got_current == current
        for check in run.later:
            check()
        # and flowd's own file holds it again, so the next tool loads the merged state
        wait_for(lambda: _file_is_flowds(run), timeout=15.0, what="flows.json rewritten by flowd")
        doc = json.loads((run.data_dir / "flows.json").read_text(encoding="utf-8"))
        assert {fid: (f["name"], f["plans"]) for fid, f in doc["flows"].items()} == want
    finally:
        for t in run.tools:
            t.close()
        run.c.close()


def _file_is_flowds(run: Run) -> bool:
    doc = json.loads((run.data_dir / "flows.json").read_text(encoding="utf-8"))
    return doc["meta"].get("revision") == run.c.ping()["revision"]
