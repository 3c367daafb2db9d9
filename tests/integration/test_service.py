"""Running as a service: sd_notify with a fake NOTIFY_SOCKET, watchdog, SIGHUP, autostart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from flowd_client import FlowClient
from flowd_client.discovery import is_locked, read_lock_info


def _collect(sock: socket.socket, until: float) -> list[str]:
    got: list[str] = []
    sock.settimeout(0.2)
    while time.monotonic() < until:
        try:
            got.extend(sock.recv(4096).decode().splitlines())
        except TimeoutError:
            continue
    return got


def test_notify_ready_status_watchdog_stopping(tmp_path: Path) -> None:
    addr = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(addr)
    env = {**os.environ, "NOTIFY_SOCKET": addr, "WATCHDOG_USEC": "400000"}
    data = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-m", "flowd", "--data-dir", str(data)], env=env,
                            stderr=subprocess.DEVNULL)
    try:
        lines = []
        deadline = time.monotonic() + 20
        while "READY=1" not in lines and time.monotonic() < deadline:
            lines += _collect(sock, time.monotonic() + 0.3)
        assert "READY=1" in lines
        with FlowClient(data, timeout=5) as c:  # READY means requests are answered
            assert c.ping()["pong"]
        lines += _collect(sock, time.monotonic() + 1.0)
        assert lines.count("WATCHDOG=1") >= 2  # every 0.2 s for WATCHDOG_USEC=0.4 s
        assert any(line.startswith("STATUS=") and "flows" in line for line in lines)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        lines += _collect(sock, time.monotonic() + 0.3)
        assert "STOPPING=1" in lines
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()


def test_sighup_reloads_log_level(make_daemon, tmp_path: Path) -> None:
    conf = tmp_path / "flowd.toml"
    conf.write_text('log_level = "INFO"\n')
    d = make_daemon(None, "--config", str(conf)).start()
    conf.write_text('log_level = "DEBUG"\n')
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "SIGHUP: reloaded (log level DEBUG)" not in d.read_log():
        assert time.monotonic() < deadline, d.read_log()
        time.sleep(0.05)
    with d.client() as c:
        assert c.ping()["pong"]
    assert d.stop() == 0


def test_check_config_and_help(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "flowd", "--help"], capture_output=True,
                         text=True, timeout=30)
    for setting in ("--durability", "FLOWD_DURABILITY", "--snapshot-interval", "--data-dir"):
        assert setting in out.stdout
    ok = subprocess.run([sys.executable, "-m", "flowd", "--check-config", "--data-dir",
                         str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and '"durability": "strict"' in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "flowd", "--check-config"], capture_output=True,
                         text=True, timeout=30, env={**os.environ, "FLOWD_DURABILITY": "fast"})
    assert bad.returncode != 0 and "FLOWD_DURABILITY" in bad.stderr


def test_autostart_many_tools_one_daemon(tmp_path: Path) -> None:
    data = tmp_path / "auto"
    ids: list[str] = []
    errors: list[BaseException] = []

    def tool() -> None:
        try:
            with FlowClient(data, autostart=True, timeout=20) as c:
                ids.append(c.add_flow("t"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=tool) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    info = read_lock_info(data)
    try:
        assert not errors, errors
        assert len(set(ids)) == 6
        with FlowClient(data) as c:
            assert set(c.get_all_flows()) == set(ids)
            assert c.stats()["process"]["pid"] == info["pid"]
    finally:
        stop_every_holder(data)


def stop_every_holder(data: Path, quiet: float = 1.5, budget: float = 30.0) -> None:
    """SIGTERM whoever holds the data dir until nobody has for ``quiet`` seconds: a
    daemon a slow tool spawned may still be waiting for the lock and take it next."""
    deadline = time.monotonic() + budget
    free_since = time.monotonic()
    while time.monotonic() < deadline:
        info = read_lock_info(data)
        if info and is_locked(data):
            try:
                os.kill(info["pid"], signal.SIGTERM)
            except ProcessLookupError:
                pass
            free_since = time.monotonic()
        elif time.monotonic() - free_since >= quiet:
            return
        time.sleep(0.05)


def test_autostart_is_off_by_default(tmp_path: Path) -> None:
    from flowd_client import UnavailableError

    with pytest.raises(UnavailableError):
        FlowClient(tmp_path / "none", timeout=0.5).ping()
    assert not (tmp_path / "none" / "flowd.lock").exists()
