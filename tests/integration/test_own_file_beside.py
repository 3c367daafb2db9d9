"""A restart on flowd's own big file checks its lines in a forked child while the
daemon splits them (flowd.storage.lines_split, FORK_FROM): real daemons on a file
past the threshold. The store is the one written, names found by the keys the
child hashed; a daemon SIGKILLed while its child checks leaves nothing behind
that keeps the next one from starting; a child that fails leaves the check to
the daemon.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from test_first_start_child import _tool_file
from test_stray_off_loop import fifo_gate, held_child, release

from flowd.storage.lines_split import CHECK_GATE_ENV, FORK_FROM

QUIET = ("--snapshot-interval", "3600")
ODD = ["한글 이름", 'with "quotes"', "back\\slash", "same", "same"]


@pytest.fixture
def own_file(make_daemon, tmp_path: Path) -> tuple[Path, dict[str, dict], dict[str, str]]:
    """A data dir whose flows.json flowd wrote, with more than FORK_FROM bytes of
    flows, some of them oddly named (escaped in the file)."""
    data = tmp_path / "data"
    flows = _tool_file(data)
    d = make_daemon(data, *QUIET).start()
    with d.client(timeout=30) as c:
        odd = {c.add_flow(name, [{"i": i}]): name for i, name in enumerate(ODD)}
        assert c.save(force=True)
    assert d.stop() == 0
    assert (data / "flows.json").stat().st_size > FORK_FROM * 1.05
    return data, flows, odd


@pytest.fixture
def gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    yield from fifo_gate(tmp_path / "check-gate", CHECK_GATE_ENV, monkeypatch)


def _served(c, flows: dict[str, dict], odd: dict[str, str]) -> None:
    assert c.stats()["flows"] == len(flows) + len(odd)
    for fid in sorted(flows)[:: len(flows) // 9]:
        got = c.get_flow_by_id(fid)
        assert (got.name, got.plans) == (flows[fid]["name"], flows[fid]["plans"])
    for name in set(ODD):  # the names index keyed by the child's hashes
        assert sorted(f.id for f in c.find_by_name(name)) == sorted(
            fid for fid, n in odd.items() if n == name)
    some = sorted(flows)[len(flows) // 2]
    assert [f.id for f in c.find_by_name(flows[some]["name"])] == [some]


@pytest.mark.timeout(180)
def test_a_restart_checks_beside_and_serves_the_store_it_wrote(make_daemon, own_file) -> None:
    data, flows, odd = own_file
    d = make_daemon(data, *QUIET).start()
    with d.client(timeout=30) as c:
        assert c.stats()["load"]["read"] == "lines"
        _served(c, flows, odd)
    assert psutil.Process(d.proc.pid).children() == []  # the child reaped
    assert d.stop() == 0
    log = d.read_log()
    assert "did not finish" not in log and "other ids" not in log


@pytest.mark.timeout(180)
def test_a_daemon_killed_while_its_child_checks_leaves_the_dir_free(
        make_daemon, own_file, gate: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The child holds no copy of the lock or the sockets: while it is still alive, a
    new daemon starts on the dir and serves it; let go, the orphan exits on its own."""
    data, flows, odd = own_file
    d = make_daemon(data, *QUIET).start(wait=False)
    held = held_child(gate)
    child = psutil.Process(d.proc.pid).children()
    assert len(child) == 1
    d.kill()
    monkeypatch.delenv(CHECK_GATE_ENV)
    again = make_daemon(data, *QUIET).start()
    with again.client(timeout=30) as c:
        _served(c, flows, odd)
    assert child[0].is_running()  # still waiting at the gate all along
    release(held)
    psutil.wait_procs(child, timeout=30)
    assert not child[0].is_running()
    assert again.stop() == 0


@pytest.mark.timeout(180)
def test_a_child_that_fails_leaves_the_check_to_the_daemon(make_daemon, own_file,
                                                           gate: Path) -> None:
    data, flows, odd = own_file
    d = make_daemon(data, *QUIET).start(wait=False)
    release(held_child(gate), b"fail")
    d.wait_ready()
    with d.client(timeout=30) as c:
        assert c.stats()["load"]["read"] == "lines"
        _served(c, flows, odd)
    assert d.stop() == 0
    assert "did not finish: checking them in the daemon" in d.read_log()
