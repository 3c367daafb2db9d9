"""Shared fixtures: real flowd processes on temp data dirs, real clients.

Every flowd a test starts is checked when the test ends: a Traceback or an
ERROR/CRITICAL line in its log fails the test, unless the test declares it
with ``@pytest.mark.daemon_errors(REGEX, ...)`` (each line matching one of the
patterns is expected; ``daemon_errors(".")`` expects any).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flowd_client import FlowClient
from flowd_client.discovery import is_locked, read_lock_info

pytest_plugins = ["etcd_cluster"]  # real etcd clusters: fixtures etcd_cluster, etcd_single

START_TIMEOUT = 20.0
#: every Daemon made during the current test, for the log check at its end
_MADE: list[Daemon] = []
_PROBLEM = re.compile(r"^Traceback |^\S+ \S+ (ERROR|CRITICAL) ")


class Daemon:
    """One `flowd` process; start/stop/kill as a test needs."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        self.data_dir = data_dir
        self.args = list(args)
        self.proc: subprocess.Popen | None = None
        self.log = data_dir.parent / f"{data_dir.name}.log"
        #: how to run flowd (a test may wrap it, e.g. to hold its fsyncs)
        self.command = [sys.executable, "-m", "flowd"]
        _MADE.append(self)

    def start(self, *extra: str, wait: bool = True, preexec_fn=None) -> Daemon:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("NOTIFY_SOCKET", None)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.command, "--data-dir", str(self.data_dir),
                 "--snapshot-interval", "0.2", *self.args, *extra],
                stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=preexec_fn)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"flowd exited {self.proc.returncode}:\n{self.read_log()}")
            info = read_lock_info(self.data_dir)
            if info and info.get("pid") == self.proc.pid and is_locked(self.data_dir):
                try:
                    with FlowClient(self.data_dir, timeout=2.0) as c:
                        c.ping()
                    return
                except Exception:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"flowd did not become ready:\n{self.read_log()}")

    def read_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-5000:]
        except FileNotFoundError:
            return ""

    def log_problems(self, expected: tuple[str, ...]) -> list[str]:
        """Lines of its log that say something went wrong and no pattern expects."""
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if _PROBLEM.match(line)
                and not any(re.search(p, line) for p in expected)]

    def stop(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        return rc

    def kill(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def client(self, **kw) -> FlowClient:
        return FlowClient(self.data_dir, **kw)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "daemon_errors(*patterns): ERROR lines or tracebacks "
                            "the test provokes in its daemons' logs (regexes)")


@pytest.fixture(autouse=True)
def _daemon_logs_clean(request: pytest.FixtureRequest):
    """After the test (and the fixtures that stop its daemons): no unexpected ERROR
    line and no traceback in the log of any flowd it started."""
    _MADE.clear()
    yield
    marker = request.node.get_closest_marker("daemon_errors")
    expected = tuple(marker.args) if marker else ()
    problems = [f"{d.log.name}: {line}" for d in _MADE for line in d.log_problems(expected)]
    _MADE.clear()
    if problems:
        pytest.fail("unexpected errors in the daemon log:\n" + "\n".join(problems[:20]),
                    pytrace=False)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def daemon(data_dir: Path):
    d = Daemon(data_dir)
    d.start()
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.kill()


@pytest.fixture
def make_daemon(tmp_path: Path):
    made: list[Daemon] = []

    def make(data_dir: Path | None = None, *args: str) -> Daemon:
        d = Daemon(data_dir or tmp_path / f"data{len(made)}", *args)
        made.append(d)
        return d
    yield make
    for d in made:
        if d.proc is not None and d.proc.poll() is None:
            d.kill()


@pytest.fixture
def client(daemon: Daemon):
    c = daemon.client()
    yield c
    c.close()


@pytest.fixture
def o_direct(tmp_path: Path) -> bool:
    """Whether tmp_path's file system takes O_DIRECT (where it does not, flowd's big
    files go through the page cache: flowd.storage.direct)."""
    from flowd.storage import direct

    fd = os.open(tmp_path / "o_direct-probe", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        return direct._set_direct(fd, True)
    finally:
        os.close(fd)
