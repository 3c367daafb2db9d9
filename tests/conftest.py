"""Shared fixtures: real flowd processes on temp data dirs, real clients."""

from __future__ import annotations

import os
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


class Daemon:
    """One `flowd` process; start/stop/kill as a test needs."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        self.data_dir = data_dir
        self.args = list(args)
        self.proc: subprocess.Popen | None = None
        self.log = data_dir.parent / f"{data_dir.name}.log"
        #: how to run flowd (a test may wrap it, e.g. to hold its fsyncs)
        self.command = [sys.executable, "-m", "flowd"]

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
