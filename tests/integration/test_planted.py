"""Issue 10, probes 1, 2 and 9: a data dir that is not flowd's, planted links and FIFOs,
a loose dir that let another user replace the socket.

Each test starts a real ``flowd`` (as root, as flowd often runs) on a dir another
user (uid 65534) could prepare, and checks that nothing outside the dir was
touched, that the refusal is one line with the documented exit code, and that
clients never talk to an impostor.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq
from flowd_client import FlowClient, UntrustedError
from other_user import NOBODY, NOGROUP, needs_root, run_as, shared_dir, spawn_as

pytestmark = needs_root
VICTIM = b"precious bytes that are not flowd's\n"


def run_flowd(data_dir: Path, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flowd", "--data-dir", str(data_dir), *args],
                          capture_output=True, text=True, timeout=timeout)


def one_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("flowd: ")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.fixture
def base():
    with shared_dir() as d:
        yield d


def victim(base: Path) -> Path:
    path = base / "victim"
    path.write_bytes(VICTIM)
    os.chmod(path, 0o644)
    return path


def assert_untouched(path: Path) -> None:
    assert path.read_bytes() == VICTIM
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_foreign_data_dir_with_planted_links_is_refused(base: Path) -> None:
    target = victim(base)
    data = base / "data"
    data.mkdir()
    for name in ("flowd.lock", ".flows.json.tmp", "flows.json"):
        os.symlink(target, data / name)
        os.lchown(data / name, NOBODY, NOGROUP)
    os.chown(data, NOBODY, NOGROUP)
    proc = run_flowd(data)
    assert proc.returncode == 2
    line = one_line(proc)
    assert str(data) in line and "uid 65534" in line and "run flowd as that user" in line
    assert_untouched(target)


@pytest.mark.parametrize("name", ["flowd.lock", "flows.json", ".flows.json.written",
                                  "flows.json.prev", "journal-00000001.jnl"])
def test_a_link_in_flowds_own_dir_is_refused_never_followed(base: Path, name: str) -> None:
    target = victim(base)
    data = base / "data"
    data.mkdir(mode=0o700)
    os.symlink(target, data / name)
    proc = run_flowd(data)
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc)
    assert name in line and "symbolic link" in line and str(target) in line
    assert_untouched(target)


def test_a_planted_temp_name_is_never_written_through(make_daemon, base: Path) -> None:
    """Temp files get fresh names (O_EXCL): an old fixed name planted as a link is ignored."""
    target = victim(base)
    data = base / "data"
    data.mkdir(mode=0o700)
    os.symlink(target, data / ".flows.json.tmp")
    d = make_daemon(data).start()
    with d.client() as c:
        for i in range(5):
            c.add_flow(f"f{i}")
        assert c.save(force=True)
    assert d.stop() == 0
    assert_untouched(target)
    assert json.loads((data / "flows.json").read_text())["meta"]["revision"] == 5


@pytest.mark.parametrize("plant", ["fifo", "dev-zero"])
def test_journal_segment_fifo_or_device_link_refuses_fast(base: Path, plant: str) -> None:
    data = base / "data"
    data.mkdir(mode=0o700)
    seg = data / "journal-00000001.jnl"
    if plant == "fifo":
        os.mkfifo(seg)
    else:
        os.symlink("/dev/zero", seg)
    t0 = time.monotonic()
    proc = run_flowd(data)
    assert time.monotonic() - t0 < 20  # before: hung on the FIFO, or MemoryError on /dev/zero
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc)
    assert seg.name in line and ("FIFO" in line or "symbolic link" in line)


def test_loose_dir_is_tightened_with_a_warning(make_daemon, base: Path) -> None:
    data = base / "data"
    data.mkdir()
    os.chmod(data, 0o777)
    d = make_daemon(data).start()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    warnings = [ln for ln in d.read_log().splitlines() if "WARNING" in ln and "0777" in ln]
    assert len(warnings) == 1 and "tightened it to 0700" in warnings[0]
    sock = data / "flowd.sock"

    def steal() -> str:
        try:
            os.rename(sock, data.parent / "stolen.sock")
        except PermissionError:
            return "refused"
        return "renamed"

    assert run_as(steal) == "refused"  # the probe: another user renamed it and bound their own
    with d.client() as c:
        assert c.ping()["pong"]


def _impostor(data: Path, ready_path: str, seconds: float) -> int:
    """Another user's fake daemon in a world-writable dir: its own flowd.lock (locked)
    and socket; returns how many frames anybody sent it."""
    import fcntl

    for name in ("flowd.lock", "flowd.sock"):
        try:
            os.rename(data / name, data / f"{name}.old")
        except FileNotFoundError:
            pass
    lock = open(data / "flowd.lock", "w")  # noqa: SIM115 - held while it serves
    json.dump({"pid": os.getpid(), "endpoint": f"ipc://{data}/flowd.sock",
               "events": f"ipc://{data}/flowd-events.sock"}, lock)
    lock.flush()
    fcntl.flock(lock, fcntl.LOCK_EX)
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.bind(f"ipc://{data}/flowd.sock")
    Path(ready_path).write_text("ready")
    got = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if router.poll(100):
            router.recv_multipart()
            got += 1
    return got


def test_client_refuses_an_impostor_and_sends_nothing(make_daemon, base: Path) -> None:
    data = base / "data"
    d = make_daemon(data).start()
    assert d.stop() == 0
    os.chmod(data, 0o777)  # loosened after flowd ran: anyone can replace its files
    ready = base / "ready"
    os.chmod(base, 0o777)
    child = spawn_as(_impostor, data, str(ready), 4.0)
    deadline = time.monotonic() + 10
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ready.exists()
    with pytest.raises(UntrustedError) as err:
        FlowClient(data, timeout=2).add_flow("secret")
    assert "flowd.lock" in str(err.value) or "mode 0777" in str(err.value)
    assert child.result() == 0  # the impostor never saw a frame


def test_client_refuses_a_socket_of_another_user(make_daemon, base: Path) -> None:
    data = base / "data"
    d = make_daemon(data).start()
    os.lchown(data / "flowd.sock", NOBODY, NOGROUP)  # as if another user had bound it
    with pytest.raises(UntrustedError, match="not a socket of the data dir's owner"):
        FlowClient(data, timeout=2).ping()
    os.lchown(data / "flowd.sock", 0, 0)
    with d.client() as c:
        assert c.ping()["pong"]
