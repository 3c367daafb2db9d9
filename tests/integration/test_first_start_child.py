"""A big file flowd did not write, parsed at the first start in a child process
(flowd.load_child): the daemon serves it as if it had parsed it itself, and does not
keep the parse's memory; a child that fails leaves the parse to the daemon."""

from __future__ import annotations

from pathlib import Path

import orjson
import psutil
import pytest

from flowd.load_child import CHILD_LOAD_BYTES, GATE_ENV

T0 = "2024-05-01T09:00:00"


def _tool_file(data: Path) -> dict[str, dict]:
    """A legacy flows.json (no version, a list of flows) just over the threshold."""
    flows, size, i = [], 0, 0
    while size < CHILD_LOAD_BYTES * 1.1:
        flow = {"id": f"flow_{i:08x}", "name": f"flow {i}", "created": T0, "updated": T0,
                "plans": [{"id": k, "title": f"step {k} of {i}", "done": k % 2 == 0,
                           "notes": "x" * 60} for k in range(4)]}
        flows.append(flow)
        size += len(orjson.dumps(flow))
        i += 1
    data.mkdir(mode=0o700, parents=True)
    (data / "flows.json").write_bytes(orjson.dumps({"flows": flows}))
    return {f["id"]: f for f in flows}


def _rss(d) -> int:
    return psutil.Process(d.proc.pid).memory_info().rss


@pytest.mark.timeout(180)
def test_the_first_start_keeps_no_parse_memory(make_daemon, tmp_path: Path) -> None:
    data = tmp_path / "data"
    flows = _tool_file(data)
    d = make_daemon(data)
    d.start()
    first = _rss(d)
    with d.client() as c:
        assert c.stats()["flows"] == len(flows)
        some = sorted(flows)[:: len(flows) // 7]
        for fid in some:
            got = c.get_flow_by_id(fid)
            assert (got.name, got.plans) == (flows[fid]["name"], flows[fid]["plans"])
    assert d.stop() == 0
    assert "in a child process" in d.read_log()
    assert list(data.glob("flows.json.backup-*")), "the legacy file is kept as before"
    d.start()  # flowd's own file, read by its lines: the memory the store itself needs
    with d.client() as c:
        assert [c.get_flow_by_id(fid).name for fid in some] == [flows[f]["name"] for f in some]
    again = _rss(d)
    assert d.stop() == 0
    # parsed in the daemon, the same start held about twice the restart's memory
    assert first < again * 1.3, (first >> 20, again >> 20)


@pytest.mark.timeout(180)
def test_a_failing_child_leaves_the_parse_to_the_daemon(make_daemon, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    flows = _tool_file(data)
    gate = tmp_path / "gate"
    gate.write_bytes(b"fail")
    monkeypatch.setenv(GATE_ENV, str(gate))
    d = make_daemon(data)
    d.start()
    with d.client() as c:
        assert c.stats()["flows"] == len(flows)
    assert d.stop() == 0
    log = d.read_log()
    assert "could not parse flows.json in a child process" in log and "in the daemon" in log
