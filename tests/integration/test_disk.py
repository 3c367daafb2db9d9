"""Issue 10, probes 10-12: a nearly full disk, a full one, clean failures at start and stop.

The disk tests run the daemon on a small tmpfs (mounted by the test: needs
root), so "full" is a real ENOSPC from the kernel, not an injected one.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flowd_client import FlowClient, UnavailableError
from flowd_client.discovery import is_locked, read_lock_info

MiB = 1 << 20
HERE = Path(__file__).resolve().parent


def wait_up(data: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 20
    while not (read_lock_info(data) or {}).get("endpoint") or not is_locked(data):
        assert proc.poll() is None and time.monotonic() < deadline, "flowd did not start"
        time.sleep(0.05)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("flowd: ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture
def tmpfs(tmp_path: Path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs",
                           str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}); "
                    "the disk tests need root and mount(8)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(mnt: Path, leave: int) -> Path:
    filler = mnt / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free_bytes(mnt) - leave))
    return filler


@pytest.mark.daemon_errors(r"No space left on device")
def test_preallocation_never_refuses_a_write_that_fits(make_daemon, tmpfs: Path) -> None:
    data = tmpfs / "data"
    d = make_daemon(data, "--snapshot-interval", "3600", "--journal-max-bytes", "1G")
    d.log = tmpfs.parent / "daemon.log"  # the log must not fill the disk under test
    d.start()
    fill(tmpfs, int(1.6 * MiB))  # 20 % of the filesystem free; the segment holds 1 MiB of it
    plan = [{"text": "r" * 8000}]
    acked = 0
    with d.client(timeout=10) as c:
        while True:
            try:
                c.add_flow(f"f{acked}", plan)
            except UnavailableError:
                break
            acked += 1
            assert acked < 10_000
        left = free_bytes(tmpfs)
    # before: refused once the next 1 MiB step did not fit, with about 600 KiB free
    assert left < 64 * 1024, f"refused with {left} bytes free after {acked} writes"
    assert acked > 150


@pytest.mark.daemon_errors(r"No space left on device")
def test_a_full_disk_logs_refusals_once_a_second_with_counts(make_daemon, tmpfs: Path) -> None:
    data = tmpfs / "data"
    d = make_daemon(data, "--snapshot-interval", "3600")
    d.log = tmpfs.parent / "daemon.log"
    d.start()
    filler = fill(tmpfs, 0)
    refused = 0
    t0 = time.monotonic()
    with d.client(timeout=10) as c:
        while refused < 300:
            try:
                c.add_flow("x", [{"text": "y" * 4000}])
            except UnavailableError:
                refused += 1
        elapsed = time.monotonic() - t0
        deadline = time.monotonic() + 10
        while "refused in the last" not in d.read_log():  # the counts line of that second
            assert time.monotonic() < deadline, d.read_log()
            time.sleep(0.05)
        filler.unlink()
        fid = c.add_flow("after")  # room again: the next write is accepted
        assert c.get_flow_by_id(fid) is not None
    log = d.read_log()
    lines = [ln for ln in log.splitlines() if "journal" in ln and "ERROR" in ln]
    # before: one ERROR line per refused write (302 lines in 0.1 s)
    assert len(lines) <= 2 * (elapsed + 2) + 2, "\n".join(lines)
    counts = [ln for ln in lines if "refused in the last" in ln]
    assert counts and int(counts[0].split(": ")[-1].split()[0]) >= 100, log


def test_tcp_port_in_use_is_one_line_and_exit_3(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        proc = subprocess.run([sys.executable, "-m", "flowd", "--data-dir", str(tmp_path / "d"),
                               "--endpoint", f"tcp://127.0.0.1:{port}"],
                              capture_output=True, text=True, timeout=60)
    finally:
        holder.close()
    assert proc.returncode == 3
    assert f"tcp://127.0.0.1:{port} is in use" in one_line(proc.stderr)


def test_start_on_a_read_only_filesystem_is_one_line(make_daemon, tmpfs: Path) -> None:
    data = tmpfs / "data"
    d = make_daemon(data).start()
    with d.client() as c:
        c.add_flow("kept")
    assert d.stop() == 0
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    proc = subprocess.run([sys.executable, "-m", "flowd", "--data-dir", str(data)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "Read-only file system" in one_line(proc.stderr)


def test_stop_on_a_read_only_filesystem_is_one_line(tmp_path: Path) -> None:
    data, trigger = tmp_path / "data", tmp_path / "now-read-only"
    proc = subprocess.Popen([sys.executable, str(HERE / "readonly_daemon.py"), str(trigger),
                             "--data-dir", str(data), "--snapshot-interval", "3600"],
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_up(data, proc)
        with FlowClient(data, timeout=20) as c:
            c.add_flow("journaled")
        trigger.write_text("")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, stderr
    assert "final snapshot was not written" in one_line(stderr)
    trigger.unlink()
    with subprocess.Popen([sys.executable, "-m", "flowd", "--data-dir", str(data)]) as again:
        try:
            wait_up(data, again)
            with FlowClient(data, timeout=20) as c:  # the journal kept the write
                assert [f.name for f in c.get_all_flows().values()] == ["journaled"]
        finally:
            again.send_signal(signal.SIGTERM)
            assert again.wait(60) == 0
