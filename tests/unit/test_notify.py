"""flowd.notify against fake NOTIFY_SOCKETs (a path and an abstract name)."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowd.notify import Notifier, watchdog_interval


def receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


@pytest.fixture(params=["path", "abstract"])
def fake_systemd(request, tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket standing in for systemd, and its NOTIFY_SOCKET value."""
    if request.param == "path":
        address = str(tmp_path / "notify")
        env_value = address
    else:
        name = f"flowd-test-{uuid.uuid4().hex}"
        address, env_value = "\0" + name, "@" + name
    sock = receiver(address)
    yield sock, env_value
    sock.close()


def recv(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_messages_reach_the_socket(fake_systemd) -> None:
    sock, env_value = fake_systemd
    n = Notifier({"NOTIFY_SOCKET": env_value})
    assert n.ready() and recv(sock) == "READY=1"
    assert n.status("loading 100000 flows") and recv(sock) == "STATUS=loading 100000 flows"
    assert n.watchdog() and recv(sock) == "WATCHDOG=1"
    assert n.stopping() and recv(sock) == "STOPPING=1"
    n.close()


def test_send_fields_and_raw(fake_systemd) -> None:
    sock, env_value = fake_systemd
    n = Notifier({"NOTIFY_SOCKET": env_value})
    assert n.send(status="two\nlines", errno=5, ready=True)
    assert recv(sock) == "STATUS=two lines\nERRNO=5\nREADY=1"
    assert n.send() is False
    n.close()
    n.close()  # idempotent
    assert n.watchdog() and recv(sock) == "WATCHDOG=1"  # reopens after close
    n.close()


def test_one_socket_is_reused(fake_systemd) -> None:
    sock, env_value = fake_systemd
    n = Notifier({"NOTIFY_SOCKET": env_value})
    n.watchdog()
    first = n._sock
    n.watchdog()
    assert n._sock is first
    n.close()


@pytest.mark.parametrize("env", [{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "relative/x"}])
def test_disabled_without_usable_notify_socket(env) -> None:
    n = Notifier(env)
    assert n.ready() is False and n.watchdog() is False and n.stopping() is False
    assert n._sock is None


def test_send_errors_are_logged_not_raised(tmp_path: Path, caplog) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    with caplog.at_level(logging.DEBUG, logger="flowd.notify"):
        assert n.ready() is False
    assert any("sd_notify" in r.getMessage() and r.levelno == logging.DEBUG
               for r in caplog.records)
    n.close()


def test_reads_os_environ_by_default(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "s"))
    sock = receiver(str(tmp_path / "s"))
    assert Notifier().ready() and recv(sock) == "READY=1"
    sock.close()
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert Notifier().ready() is False


@pytest.mark.parametrize("env,expected", [
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_watchdog_interval(env, expected) -> None:
    assert watchdog_interval(env) == expected
