"""Issue 10, probes 3-5: a removed flowd.lock, two dirs on one endpoint, a removed socket.

The data dir itself is locked, so deleting flowd.lock lets no second daemon
in (before: both ran and 18 of 4034 acknowledged writes were lost); an
endpoint held by a live daemon is never taken over; socket files and
flowd.lock that disappear are put back within a second.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from awaiting import wait_for
from flowd_client import FlowClient
from flowd_client.discovery import read_lock_info


def run_flowd(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flowd", "--data-dir", str(data_dir), *args],
                          capture_output=True, text=True, timeout=60)




class Writer(threading.Thread):
    """Adds flows until stopped; remembers every id the daemon acknowledged."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(daemon=True)
        self.data_dir = data_dir
        self.acked: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with FlowClient(self.data_dir, timeout=2.0) as c:
            i = 0
            while not self.stop.is_set():
                try:
                    self.acked.append(c.add_flow(f"w{i}"))
                except Exception:  # noqa: BLE001 - the daemon is killed under us
                    pass
                i += 1


def test_removed_lock_file_lets_no_second_daemon_in(make_daemon, data_dir: Path) -> None:
    d = make_daemon(data_dir).start()
    writer = Writer(data_dir)
    writer.start()
    wait_for(lambda: len(writer.acked) > 50, what="first writes")
    (data_dir / "flowd.lock").unlink()
    second = run_flowd(data_dir)
    assert second.returncode == 3, second.stderr
    assert "in use by" in second.stderr and "Traceback" not in second.stderr
    wait_for(lambda: "flowd.lock was removed: created it again" in d.read_log(), 5.0,
             "flowd.lock to be put back")
    assert (read_lock_info(data_dir) or {}).get("pid") == d.proc.pid
    third = run_flowd(data_dir)  # and with the new file, the same answer
    assert third.returncode == 3 and f"pid {d.proc.pid}" in third.stderr
    wait_for(lambda: len(writer.acked) > 200, what="more writes")
    d.kill()
    writer.stop.set()
    writer.join(10)
    acked = set(writer.acked)
    again = make_daemon(data_dir).start()
    with again.client() as c:
        assert acked <= set(c.get_all_flows())
    assert not [p for p in data_dir.iterdir() if ".stray-" in p.name]


def test_endpoint_held_by_a_daemon_of_another_dir_exits_3(make_daemon, tmp_path: Path) -> None:
    ep, ev = f"ipc://{tmp_path}/shared.sock", f"ipc://{tmp_path}/shared-events.sock"
    first = make_daemon(tmp_path / "a", "--endpoint", ep, "--events-endpoint", ev).start()
    with first.client() as c:
        fid = c.add_flow("in a")
    proc = run_flowd(tmp_path / "b", "--endpoint", ep, "--events-endpoint", ev)
    assert proc.returncode == 3, proc.stderr
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("flowd: ")]
    assert len(line) == 1 and "Traceback" not in proc.stderr
    assert ep in line[0] and f"pid {first.proc.pid}" in line[0] and str(tmp_path / "a") in line[0]
    with FlowClient(endpoint=ep, timeout=5) as c:  # the first one still owns it
        assert c.get_flow_by_id(fid).name == "in a"


def test_a_stale_socket_of_ours_is_replaced(make_daemon, data_dir: Path) -> None:
    d = make_daemon(data_dir).start()
    d.kill()  # leaves flowd.sock behind, with nobody listening
    assert (data_dir / "flowd.sock").exists()
    again = make_daemon(data_dir).start()
    with again.client() as c:
        assert c.ping()["pong"]


@pytest.mark.parametrize("name", ["flowd.sock", "flowd-events.sock"])
def test_removed_socket_is_bound_again(daemon, data_dir: Path, name: str) -> None:
    old = daemon.client(timeout=5)
    old.ping()
    fid = old.add_flow("before")
    (data_dir / name).unlink()
    wait_for(lambda: f"{data_dir / name} was removed: bound it again" in daemon.read_log(),
             5.0, f"{name} to be bound again")
    assert (data_dir / name).is_socket()
    with daemon.client(timeout=5) as new:  # a client connecting now reaches the daemon
        assert new.get_flow_by_id(fid).name == "before"
        watch = new.watch(timeout=5)
        old.update_flow(fid, name="after")  # the one connected before keeps working
        assert next(watch).flow.name == "after"
    old.close()


def test_replaced_socket_is_moved_aside_and_bound_again(daemon, data_dir: Path) -> None:
    sock = data_dir / "flowd.sock"
    sock.unlink()
    sock.write_text("not a socket")
    wait_for(lambda: sock.is_socket(), 5.0, "the socket to be bound again")
    aside = [p for p in data_dir.iterdir() if p.name.startswith("flowd.sock.foreign-")]
    assert len(aside) == 1 and aside[0].read_text() == "not a socket"
    with daemon.client(timeout=5) as c:
        assert c.ping()["pong"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user; "
                    "run the suite as root (CI does)")
def test_a_socket_given_to_another_user_is_taken_back(daemon, data_dir: Path) -> None:
    sock = data_dir / "flowd.sock"
    os.lchown(sock, 65534, 65534)
    wait_for(lambda: "flowd.sock was given to uid 65534" in daemon.read_log(), 5.0,
             "the socket to be rebound")
    assert sock.lstat().st_uid == os.geteuid()
    with daemon.client(timeout=5) as c:
        assert c.ping()["pong"]
