"""``flowctl doctor`` reports each condition of issue 10: a foreign or loose dir, planted
files, a missing flowd.lock or socket, a paused listener, an endpoint served by the
daemon of another dir, dropped replies, a nearly full disk."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import zmq
from awaiting import wait_for
from flowd_client.discovery import read_lock_info
from flowd_client.protocol import build_request

MiB = 1 << 20
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown the data dir "
                               "to another user; run the suite as root (CI does)")


def doctor(data_dir: Path) -> dict[str, dict]:
    proc = subprocess.run([sys.executable, "-m", "flowd_client.cli", "--data-dir",
                           str(data_dir), "doctor", "--json"],
                          capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is (proc.returncode == 0)
    return {c["name"]: c for c in doc["checks"]}




def test_healthy_running_daemon_reports_its_bounds(daemon, data_dir: Path) -> None:
    checks = doctor(data_dir)
    assert {n: c["status"] for n, c in checks.items() if c["status"] != "ok"} == {}
    assert "history 0/64 MiB" in checks["memory"]["message"]
    assert str(data_dir) in checks["identity"]["message"]
    assert "file descriptors open" in checks["connections"]["message"]


@root_only
def test_foreign_owner_is_reported(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir(mode=0o700)
    os.chown(d, 65534, 65534)
    check = doctor(d)["data dir"]
    assert check["status"] == "warn" and "uid 65534" in check["message"]
    assert "refuses (exit 2)" in check["hint"]


def test_loose_mode_warns_and_fails_while_running(make_daemon, data_dir: Path) -> None:
    data_dir.mkdir(mode=0o755)
    assert doctor(data_dir)["data dir"]["status"] == "warn"
    d = make_daemon(data_dir).start()
    os.chmod(data_dir, 0o777)
    check = doctor(data_dir)["data dir"]
    assert check["status"] == "fail" and "0777" in check["message"]
    os.chmod(data_dir, 0o700)
    assert d.stop() == 0


@pytest.mark.parametrize("plant", ["link", "fifo"])
def test_planted_files_fail(data_dir: Path, plant: str) -> None:
    data_dir.mkdir(mode=0o700)
    seg = data_dir / "journal-00000001.jnl"
    if plant == "link":
        os.symlink("/etc/hostname", data_dir / "flowd.lock")
    os.mkfifo(seg) if plant == "fifo" else os.symlink("/dev/zero", seg)
    checks = doctor(data_dir)  # never hangs on the FIFO, never reads /dev/zero
    assert checks["files"]["status"] == "fail"
    assert "journal-00000001.jnl is a" in checks["files"]["message"]


def test_missing_lock_file_and_socket_are_reported(tmp_path: Path) -> None:
    """What a daemon looks like between a removal and its repair (under a second), held
    still: the directory locked, flowd.lock gone; then a lock naming a missing socket."""
    d = tmp_path / "d"
    d.mkdir(mode=0o700)
    dir_fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(dir_fd, fcntl.LOCK_EX)
    try:
        check = doctor(d)["lock"]
        assert check["status"] == "warn" and "flowd.lock is missing" in check["message"]
        (d / "flowd.lock").write_text(json.dumps({"pid": os.getpid(),
                                                  "endpoint": f"ipc://{d}/flowd.sock"}))
        check = doctor(d)["sockets"]
        assert check["status"] == "fail" and "advertised but missing" in check["message"]
        (d / ".flowd.sock.paused").write_text("")
        assert "open-file limit" in doctor(d)["sockets"]["message"]
    finally:
        os.close(dir_fd)


def test_rebound_sockets_are_reported(daemon, data_dir: Path) -> None:
    (data_dir / "flowd.sock").unlink()
    wait_for(lambda: (data_dir / "flowd.sock").exists())
    check = doctor(data_dir)["connections"]
    assert check["status"] == "warn" and "bound again 1 times" in check["message"]


def test_an_endpoint_served_for_another_dir_fails_identity(daemon, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    lock = open(other / "flowd.lock", "w")  # noqa: SIM115 - held during the check
    json.dump(read_lock_info(daemon.data_dir), lock)
    lock.flush()
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        check = doctor(other)["identity"]
    finally:
        lock.close()
    assert check["status"] == "fail" and str(daemon.data_dir) in check["message"]


def test_dropped_replies_are_reported(make_daemon, data_dir: Path) -> None:
    d = make_daemon(data_dir, "--peer-queue-bytes", "128K").start()
    with d.client() as c:
        c.add_flow("big", [{"text": "x" * 200_000}])
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVHWM, 1)
    sock.connect(read_lock_info(data_dir)["endpoint"])
    for rid in range(20):
        sock.send(build_request(rid, "get_all_flows", {}))
    try:
        wait_for(lambda: "replies dropped" in doctor(data_dir)["memory"]["message"], 20)
    finally:
        ctx.destroy(linger=0)


def test_a_nearly_full_disk_warns(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root and mount(8))")
    try:
        (mnt / "d").mkdir(mode=0o700)
        check = doctor(mnt / "d")["disk"]
        assert check["status"] == "warn" and "MiB free" in check["message"]
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
