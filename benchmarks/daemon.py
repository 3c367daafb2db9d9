"""Start, wait for, measure and stop one ``flowd`` process.

"Ready" is the moment a client can be answered: flowd.lock names this
process (the daemon writes it only after binding its sockets) and a ping
comes back. Start-to-ready is timed from just before ``Popen``, so it
includes the interpreter, imports, the lock, loading and journal replay.
"""

from __future__ import annotations

import compileall
import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import flowd_client
import psutil
from flowd_client import FlowClient
from flowd_client.discovery import read_lock_info

START_TIMEOUT = 300.0
POLL = 0.005


@functools.cache
def _precompile() -> None:
    """Byte-compile flowd and its client once, as installing them would."""
    import flowd

    for pkg in (flowd, flowd_client):
        compileall.compile_dir(Path(pkg.__file__).parent, quiet=1)


class DaemonFailed(RuntimeError):
    """flowd exited or never became ready; the message carries its log tail."""


class Flowd:
    """One flowd on one data dir, started the way the brief prescribes."""

    def __init__(self, data_dir: Path, durability: str = "strict", *extra: str,
                 launcher: tuple[str, ...] = ("-m", "flowd")) -> None:
        self.data_dir = data_dir
        #: how the interpreter runs flowd (benchmarks.gil_probe wraps it with a probe)
        self.launcher = launcher
        self.durability = durability
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"{data_dir.name}.flowd.log"
        self.ready_seconds = 0.0

    def start(self, timeout: float = START_TIMEOUT) -> float:
        """Start and wait until ready; returns the seconds from spawn to ready."""
        _precompile()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # an installed daemon runs from compiled modules: never time compiling them
        for var in ("NOTIFY_SOCKET", "FLOWD_AUTOSTART", "FLOWD_CONFIG", "PYTHONDONTWRITEBYTECODE"):
            env.pop(var, None)
        cmd = [sys.executable, *self.launcher, "--data-dir", str(self.data_dir),
               "--durability", self.durability, *self.extra]
        t0 = time.perf_counter()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        self._wait_ready(timeout)
        self.ready_seconds = time.perf_counter() - t0
        return self.ready_seconds

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DaemonFailed(f"flowd exited with {self.proc.returncode}:\n{self.log_tail()}")
            info = read_lock_info(self.data_dir)
            if info and info.get("pid") == self.proc.pid and info.get("endpoint"):
                try:
                    with FlowClient(self.data_dir, timeout=5.0) as c:
                        c.ping()
                    return
                except Exception:  # noqa: BLE001 - not ready yet, keep polling
                    pass
            time.sleep(POLL)
        self.kill()
        raise DaemonFailed(f"flowd not ready within {timeout:.0f} s:\n{self.log_tail()}")

    def wait_indexed(self, timeout: float = 60.0) -> None:
        """Until the names index of the load and the memory of written files' newest map
        are complete (flowd builds both after ready, then hands what the index freed
        back): the memory figures are those of the steady state."""
        deadline = time.monotonic() + timeout
        with self.client() as c:
            while time.monotonic() < deadline:
                stats = c.stats()
                if not (stats.get("names_unindexed", 0)
                        or stats.get("file_memory", {}).get("settling")):
                    return
                time.sleep(POLL * 10)

    def client(self, **kw: Any) -> FlowClient:
        return FlowClient(self.data_dir, timeout=kw.pop("timeout", 60.0), **kw)

    def stats(self) -> dict[str, Any]:
        with self.client() as c:
            return c.stats()

    def cpu_seconds(self) -> float:
        """User + system CPU the daemon has used so far."""
        assert self.proc is not None
        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system

    def thread_cpu_seconds(self, native_id: int) -> float:
        """CPU of one of the daemon's threads (to leave a probe thread out)."""
        assert self.proc is not None
        for t in psutil.Process(self.proc.pid).threads():
            if t.id == native_id:
                return t.user_time + t.system_time
        return 0.0

    def rss(self) -> int:
        assert self.proc is not None
        return psutil.Process(self.proc.pid).memory_info().rss

    def peak_rss(self) -> int:
        """VmHWM: the high-water mark of RSS (the load peak, not just the resting size)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self, timeout: float = 120.0) -> int:
        """SIGTERM (final snapshot, clean exit); SIGKILL if it does not stop in time."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Flowd:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.stop()
        else:
            self.kill()
