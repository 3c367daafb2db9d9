"""Who can connect: flowd's own user (and root), or the members of ``--socket-group``.

Also the runtime-dir fallback for long socket paths, which follows the data
dir's rules (owned by flowd's user, tightened, else refused).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from flowd_client import FlowClient
from other_user import NOBODY, NOGROUP, needs_root, run_as, shared_dir

from flowd.storage.runtime_dir import runtime_dir

pytestmark = needs_root


@pytest.fixture
def base():
    with shared_dir() as d:
        yield d


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _add_flow(data: Path, name: str) -> str:
    with FlowClient(data, timeout=5) as c:
        return c.add_flow(name)


def _ping(data: Path) -> str:
    try:
        with FlowClient(data, timeout=2) as c:
            c.ping()
    except (OSError, Exception) as exc:  # noqa: BLE001 - the other user's view, reported
        return type(exc).__name__
    return "answered"


def test_members_of_the_socket_group_can_connect(make_daemon, base: Path) -> None:
    data = base / "data"
    d = make_daemon(data, "--socket-group", str(NOGROUP)).start()
    assert mode(data) == 0o750 and data.stat().st_gid == NOGROUP
    for name, want in (("flowd.sock", 0o660), ("flowd-events.sock", 0o660),
                       ("flowd.lock", 0o640)):
        assert (mode(data / name), os.lstat(data / name).st_gid) == (want, NOGROUP), name
    assert mode(data / "flows.json") == 0o600  # the data itself stays the owner's
    fid = run_as(_add_flow, data, "from a member", uid=NOBODY, gid=NOGROUP)
    with d.client() as c:
        assert c.get_flow_by_id(fid).name == "from a member"
    assert run_as(_ping, data, uid=NOBODY, gid=NOBODY + 1000) != "answered"  # not a member


def test_without_a_socket_group_only_the_owner_connects(make_daemon, base: Path) -> None:
    data = base / "data"
    make_daemon(data).start()
    assert mode(data) == 0o700 and mode(data / "flowd.sock") == 0o600
    assert run_as(_ping, data) != "answered"


def _long_dir(base: Path) -> Path:
    return base / ("x" * 60) / ("y" * 60) / "data"


def test_the_runtime_dir_of_another_user_is_refused(base: Path, monkeypatch) -> None:
    run_base = base / "run"
    run_base.mkdir(mode=0o755)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run_base))
    data = _long_dir(base)
    run = runtime_dir(data)
    run.mkdir(mode=0o700)
    os.chown(run, NOBODY, NOGROUP)  # prepared by another user before flowd started
    proc = subprocess.run([sys.executable, "-m", "flowd", "--data-dir", str(data)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("flowd: ")]
    assert len(lines) == 1 and "socket runtime dir" in lines[0] and "uid 65534" in lines[0]


def test_a_loose_runtime_dir_is_tightened(make_daemon, base: Path, monkeypatch) -> None:
    run_base = base / "run"
    run_base.mkdir(mode=0o755)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run_base))
    data = _long_dir(base)
    run = runtime_dir(data)
    run.mkdir()
    os.chmod(run, 0o777)
    d = make_daemon(data).start()
    assert mode(run) == 0o700 and (run / "flowd.sock").is_socket()
    assert "socket runtime dir" in d.read_log() and "tightened it to 0700" in d.read_log()
    with d.client() as c:
        assert c.ping()["pong"]
