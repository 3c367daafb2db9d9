"""An old tool's file parsed by a child process while the daemon serves (flowd.stray_parse).

The child is held at a FIFO (``FLOWD_TEST_STRAY_PARSE_GATE``) for as long as a
test needs: requests must be answered meanwhile, and what was written meanwhile
must come out of the merge as if it had been written before the tool's save. A
child that fails leaves the merge to the daemon; a daemon killed meanwhile takes
its child with it and merges the tool's file once, at the next start.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from awaiting import wait_for
from conftest import Daemon
from flowd_client import FlowClient
from seed_tool import SeedTool
from test_stray import evidence, file_settled, names

from flowd.stray_parse import GATE_ENV


@pytest.fixture
def gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    yield from fifo_gate(tmp_path / "gate", GATE_ENV, monkeypatch)


def fifo_gate(fifo: Path, env: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A child's gate (flowd.child_gate) at ``fifo``, named by ``env`` for the daemons
    the test starts; a child still waiting at the end (a failed test) is let go."""
    os.mkfifo(fifo)
    monkeypatch.setenv(env, str(fifo))
    yield fifo
    opened = _writer(fifo)
    if opened is not None:
        os.close(opened)


def _writer(fifo: Path) -> int | None:
    """The FIFO opened for writing, or None while no child has it open for reading."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno != errno.ENXIO:
            raise
        return None


def held_child(fifo: Path) -> int:
    """Wait until a parsing child waits at the gate; the gate's write end."""
    return wait_for(lambda: _writer(fifo), what="the parsing child at the gate")


def release(fd: int, word: bytes = b"go") -> None:
    os.write(fd, word)
    os.close(fd)


def tool_edit(c: FlowClient, data_dir: Path) -> tuple[dict[str, str], str]:
    """Flows A, B, C on disk; the old tool renames A, adds T, saves."""
    ids = {n: c.add_flow(n, [{"step": n}]) for n in "ABC"}
    assert c.save(force=True) is True
    tool = SeedTool(data_dir)
    tool.rename(ids["A"], "A-tool")
    t = tool.add_flow("T-tool")
    tool.save()
    return ids, t


def started(make_daemon, tmp_path: Path) -> tuple[Daemon, Path]:
    data_dir = tmp_path / "data"
    d: Daemon = make_daemon(data_dir)
    d.start()
    return d, data_dir


def merged_once_at_start(d: Daemon, data_dir: Path, want: dict[str, str], fifo: Path) -> None:
    """The next start merges the tool's file, once, with the names ``want``: parsed by a
    child too (it waits at the gate until let go), before the daemon serves."""
    d.start(wait=False)
    release(held_child(fifo))
    d.wait_ready()
    with d.client(timeout=10) as c:
        report = c.stats()["stray_merges"][-1]
        assert (report["added"], report["updated"]) == (1, 1), report
        assert names(c) == want
    assert d.stop() == 0
    assert len(evidence(data_dir, "stray")) == 1


def test_requests_are_answered_while_the_tool_file_is_parsed(
        make_daemon, tmp_path: Path, gate: Path) -> None:
    d, data_dir = started(make_daemon, tmp_path)
    with d.client(timeout=10) as c:
        ids, t = tool_edit(c, data_dir)
        fd = held_child(gate)
        # the merge is pending: reads, writes and their durability go on meanwhile
        c.update_flow(ids["B"], name="B-daemon")
        g = c.add_flow("G-daemon")
        c.update_flow(ids["A"], plans=[{"step": "A", "by": "daemon"}])  # both changed A
        assert c.get_flow_by_id(g).name == "G-daemon"
        assert c.stats()["stray_merges"] == []
        release(fd)
        report = wait_for(lambda: c.stats()["stray_merges"], what="the merge")[-1]
        assert (report["added"], report["updated"], report["conflicts"]) == (1, 0, 1), report
        assert names(c) == {ids["A"]: "A", ids["B"]: "B-daemon", ids["C"]: "C",
                            g: "G-daemon", t: "T-tool"}
        assert report["conflict_ids"] == [ids["A"]]  # the tool's rename is kept aside
        wait_for(lambda: file_settled(c, data_dir), what="flows.json rewritten by flowd")
    assert d.stop() == 0


def test_a_child_that_fails_leaves_the_merge_to_the_daemon(
        make_daemon, tmp_path: Path, gate: Path) -> None:
    d, data_dir = started(make_daemon, tmp_path)
    with d.client(timeout=10) as c:
        ids, t = tool_edit(c, data_dir)
        release(held_child(gate), b"fail")
        report = wait_for(lambda: c.stats()["stray_merges"], what="the merge")[-1]
        assert (report["added"], report["updated"]) == (1, 1), report
        assert names(c) == {ids["A"]: "A-tool", ids["B"]: "B", ids["C"]: "C", t: "T-tool"}
    assert d.stop() == 0
    text = d.log.read_text()
    assert "the parsing process exited with status 70); parsing it in the daemon" in text
    line = next(x for x in text.splitlines() if "stray flows.json merged" in x)
    assert re.search(r"; requests waited \d+\.\d\d s for the merge$", line), line


def test_a_kill_during_the_parse_merges_the_tool_file_once_at_start(
        make_daemon, tmp_path: Path, gate: Path) -> None:
    d, data_dir = started(make_daemon, tmp_path)
    with d.client(timeout=10) as c:
        ids, t = tool_edit(c, data_dir)
        fd = held_child(gate)
        acked = c.add_flow("acked during the parse")
        assert d.proc is not None
        children = psutil.Process(d.proc.pid).children()
        assert len(children) == 1
    d.kill()
    psutil.wait_procs(children, timeout=10)  # the lifeline closed: the child is gone too
    assert not any(p.is_running() for p in children)
    os.close(fd)
    merged_once_at_start(d, data_dir, {ids["A"]: "A-tool", ids["B"]: "B", ids["C"]: "C",
                                       t: "T-tool", acked: "acked during the parse"}, gate)
    assert not [p for p in data_dir.iterdir() if p.name.startswith("tmp")]


def test_a_stop_during_the_parse_stops_the_child_and_leaves_nothing_unmerged(
        make_daemon, tmp_path: Path, gate: Path) -> None:
    """SIGTERM while the child is held: the child is stopped with the daemon, which
    writes nothing over the tool's file; the next start merges it, once."""
    d, data_dir = started(make_daemon, tmp_path)
    with d.client(timeout=10) as c:
        ids, t = tool_edit(c, data_dir)
        fd = held_child(gate)
        assert d.proc is not None
        children = psutil.Process(d.proc.pid).children()
    assert d.stop() == 0
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive
    os.close(fd)
    merged_once_at_start(d, data_dir, {ids["A"]: "A-tool", ids["B"]: "B", ids["C"]: "C",
                                       t: "T-tool"}, gate)
