"""The seed's rules and the daemon's life, through the real client and real processes."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time

import pytest
from flowd_client import FlowClient, InvalidArgumentError, NotFoundError, UnavailableError

ID = re.compile(r"^flow_[0-9a-f]{8}$")


def test_seed_rules(client: FlowClient) -> None:
    assert client.get_all_flows() == {}
    assert client.current_flow_id is None
    a = client.add_flow("프로젝트 A", [{"title": "p1"}])
    assert ID.match(a)
    assert client.current_flow_id == a  # add makes current
    b = client.add_flow("B")
    c = client.add_flow("B")
    assert client.current_flow_id == c
    assert [f.id for f in client.find_by_name("B")] == [b, c]  # names need not be unique
    assert list(client.get_all_flows()) == [a, b, c]  # creation order
    assert client.set_current(b) is True
    assert client.set_current("flow_deadbeef") is False  # unknown id changes nothing
    assert client.current_flow_id == b
    assert client.delete_flow(b) is True
    assert client.current_flow_id == a  # first remaining in creation order
    assert client.delete_flow(b) is False
    assert client.get_flow_by_id(b) is None
    flow = client.get_flow_by_id(a)
    assert flow is not None and flow.name == "프로젝트 A" and flow.plans == [{"title": "p1"}]
    assert client.save() is True and client.save(force=True) is True


def test_every_mutation_bumps_revision_and_stamps_flow(client: FlowClient) -> None:
    r0 = client.ping()["revision"]
    fid = client.add_flow("x")
    f1 = client.get_flow_by_id(fid)
    assert f1.revision == r0 + 1
    time.sleep(0.002)
    f2 = client.update_flow(fid, name="y")
    assert f2.revision == r0 + 2 and f2.updated > f1.updated and f2.created == f1.created
    client.set_current(fid)
    assert client.ping()["revision"] == r0 + 3


def test_restart_keeps_everything_and_sigterm_flushes(daemon, data_dir) -> None:
    with daemon.client() as c:
        ids = [c.add_flow(f"f{i}", [{"i": i, "텍스트": "값"}]) for i in range(50)]
        c.set_current(ids[10])
    assert daemon.stop() == 0
    doc = json.loads((data_dir / "flows.json").read_text(encoding="utf-8"))
    assert doc["version"] == "3.0"
    assert list(doc["flows"]) == ids
    assert doc["current_flow_id"] == ids[10]
    assert doc["meta"]["revision"] == 51 and doc["meta"]["file_revision"] >= 1
    raw = (data_dir / "flows.json").read_text(encoding="utf-8")
    assert "텍스트" in raw and '\n  "flows": {\n    "' in raw  # UTF-8, 2-space indent
    daemon.start()
    with daemon.client() as c:
        assert list(c.get_all_flows()) == ids
        assert c.current_flow_id == ids[10]


def test_second_daemon_is_refused(daemon, data_dir) -> None:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "flowd", "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert f"pid {daemon.proc.pid}" in proc.stderr
    assert time.monotonic() - t0 < 10  # well within; the lock wait itself is 0.5 s
    with daemon.client() as c:
        assert c.ping()["pong"] is True  # the first keeps serving


def test_permissions(daemon, data_dir) -> None:
    assert stat.S_IMODE(os.stat(data_dir).st_mode) == 0o700
    info = json.loads((data_dir / "flowd.lock").read_text())
    assert {"pid", "started", "endpoint", "version", "events"} <= set(info)
    sock = info["endpoint"].removeprefix("ipc://")
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600


def test_client_errors_when_daemon_down(tmp_path) -> None:
    t0 = time.monotonic()
    with pytest.raises(UnavailableError) as err:
        FlowClient(tmp_path / "nothing", timeout=1.0).ping()
    assert "flowd --data-dir" in str(err.value)
    with pytest.raises(UnavailableError) as err:
        FlowClient(endpoint=f"ipc://{tmp_path}/none.sock", timeout=0.5).ping()
    assert "none.sock" in str(err.value)
    assert time.monotonic() - t0 < 5


def test_bad_input_changes_nothing(client: FlowClient) -> None:
    fid = client.add_flow("keep")
    before = client.ping()["revision"]
    for bad in (float("nan"), 2**70, {1: "x"}, b"bytes"):
        with pytest.raises(InvalidArgumentError):
            client.update_flow(fid, plans=[{"v": bad}])
    deep: list = []
    for _ in range(200):
        deep = [deep]
    with pytest.raises(InvalidArgumentError):
        client.add_flow("deep", [{"d": deep}])
    with pytest.raises(InvalidArgumentError):
        client.add_flow(123)  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        client.update_flow("flow_00000000", name="x")
    assert client.ping()["revision"] == before


def test_long_data_dir_uses_runtime_socket(make_daemon, tmp_path) -> None:
    deep = tmp_path / ("x" * 60) / ("y" * 60)
    d = make_daemon(deep).start()
    info = json.loads((deep / "flowd.lock").read_text())
    assert not info["endpoint"].startswith(f"ipc://{deep}")
    with d.client() as c:
        assert c.ping()["pong"]
    assert d.stop() == 0
