"""Real etcd clusters for tests (and benchmarks): 1 or 3 members from the `etcd` binary.

Each member runs on free loopback ports in its own temp dir; "healthy" is
awaited by polling each member's /health (plain http on its metrics port,
so it works with TLS too) until a deadline, never by sleeping. A member can
be SIGKILLed and started again on its data dir. Members are started with
PR_SET_PDEATHSIG, so none outlives the test process even if that is killed;
the fixtures also stop every member at teardown.

Where `etcd` is not on PATH the fixtures skip with a line saying how to get it.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

START_TIMEOUT = 30.0
POLL = 0.05
#: what tests pass to etcd besides the cluster's own URLs: a loaded 2-core box
#: misses 100 ms heartbeats, so leader elections would flap with the defaults
TEST_FLAGS = ("--heartbeat-interval", "200", "--election-timeout", "2000",
              "--logger", "zap", "--log-level", "warn")
SKIP_LINE = ("etcd is not on PATH: install Debian's etcd-server (apt-get install etcd-server) "
             "to run the etcd tests")


def etcd_binary() -> str | None:
    return shutil.which("etcd")


def _free_ports(n: int) -> list[int]:
    """Ports free just now; etcd may still lose one to a race (start() retries)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


#: util-linux's setpriv sets PR_SET_PDEATHSIG itself and execs etcd. Running Python
#: between fork and exec (preexec_fn) instead aborted the child (SIGABRT, no output)
#: when the test process had grpc threads: grpc's fork handlers run in the child.
_SETPRIV = shutil.which("setpriv")


@dataclass
class TlsFiles:
    """A CA and the server and client certificates it signed (for 127.0.0.1)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """A throwaway CA, server and client certificates, made with the openssl CLI."""
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=flowd-ca",
        "-keyout", "ca.key", "-out", "ca.crt")
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                       "extendedKeyUsage=serverAuth,clientAuth\n")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-out", f"{name}.crt")
    d = directory
    return TlsFiles(d / "ca.crt", d / "server.crt", d / "server.key",
                    d / "client.crt", d / "client.key")


class EtcdMember:
    def __init__(self, name: str, base: Path, tls: TlsFiles | None) -> None:
        self.name = name
        self.dir = base / name
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        self.client_port = self.peer_port = self.metrics_port = 0
        self.log = base / f"{name}.log"

    @property
    def client_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def command(self, initial_cluster: str, token: str, extra: tuple[str, ...]) -> list[str]:
        cmd = [etcd_binary() or "etcd", "--name", self.name, "--data-dir", str(self.dir / "data"),
               "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
               "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
               "--listen-metrics-urls", f"http://127.0.0.1:{self.metrics_port}",
               "--initial-cluster", initial_cluster, "--initial-cluster-state", "new",
               "--initial-cluster-token", token, *TEST_FLAGS]
        if self.tls:
            cmd += ["--cert-file", str(self.tls.server_cert), "--key-file",
                    str(self.tls.server_key), "--trusted-ca-file", str(self.tls.ca),
                    "--client-cert-auth"]
        return cmd + list(extra)

    def spawn(self, cmd: list[str]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            log.write(f"--- flowd tests: spawn {' '.join(cmd)}\n".encode())
            log.flush()
            if _SETPRIV is not None:
                self.proc = subprocess.Popen([_SETPRIV, "--pdeathsig", "KILL", *cmd], stdout=log,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            else:
                self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL,
                                             preexec_fn=_die_with_parent)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.metrics_port}/health", timeout=1) as r:
                return json.loads(r.read()).get("health") == "true"
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self) -> str:
        """The end of this member's log since its latest start, and how it exited."""
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        text = text[text.rfind("--- flowd tests: spawn"):]
        rc = self.proc.returncode if self.proc is not None else None
        return (text[:200] + " ... " + text[-2800:] if len(text) > 3000 else text) + (
            f"\n(exit status {rc})" if rc is not None else "")


class EtcdCluster:
    """``size`` etcd members on loopback; start(), kill(i), restart(i), stop()."""

    def __init__(self, base: Path, size: int = 1, *, tls: TlsFiles | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        self.base = base
        self.tls = tls
        self.extra = extra
        self.members = [EtcdMember(f"m{i}", base, tls) for i in range(size)]
        self._commands: list[list[str]] = []

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def start(self, timeout: float = START_TIMEOUT) -> EtcdCluster:
        """Start every member and wait until all are healthy; new ports if one was taken."""
        for attempt in range(3):
            ports = _free_ports(3 * len(self.members))
            for i, m in enumerate(self.members):
                m.client_port, m.peer_port, m.metrics_port = ports[3 * i: 3 * i + 3]
                shutil.rmtree(m.dir, ignore_errors=True)
            initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
            token = f"flowd-test-{os.getpid()}-{id(self)}-{attempt}"
            self._commands = [m.command(initial, token, self.extra) for m in self.members]
            for m, cmd in zip(self.members, self._commands, strict=True):
                m.spawn(cmd)
            if self.wait_healthy(timeout, raise_on_exit=attempt == 2):
                return self
            self.stop()
        raise AssertionError("unreachable")

    def wait_healthy(self, timeout: float = START_TIMEOUT, *, members: list[int] | None = None,
                     raise_on_exit: bool = True) -> bool:
        """Poll /health of the given members (all running ones) until true or the deadline."""
        chosen = [self.members[i] for i in members] if members is not None else [
            m for m in self.members if m.proc is not None]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            exited = [m for m in chosen if not m.running()]
            if exited:
                if not raise_on_exit and "address already in use" in exited[0].log_tail():
                    return False
                raise RuntimeError(f"etcd {exited[0].name} exited:\n{exited[0].log_tail()}")
            if all(m.healthy() for m in chosen):
                return True
            time.sleep(POLL)
        raise RuntimeError("etcd did not become healthy in time:\n" +
                           "\n".join(m.log_tail() for m in chosen))

    def kill(self, i: int) -> None:
        """SIGKILL member i (its data dir stays, for restart)."""
        self.members[i].kill()

    def restart(self, i: int, timeout: float = START_TIMEOUT) -> None:
        """Start member i again on its data dir and wait until it is healthy."""
        self.members[i].spawn(self._commands[i])
        self.wait_healthy(timeout, members=[i])

    def stop(self) -> None:
        for m in self.members:
            m.stop()

    def client(self, i: int = 0) -> Any:
        """A python3-etcd3 client on member i, for what the adapter does not do (compaction)."""
        import etcd3  # only the tests that need it import it

        m = self.members[i]
        tls = ({"ca_cert": str(self.tls.ca), "cert_cert": str(self.tls.client_cert),
                "cert_key": str(self.tls.client_key)} if self.tls else {})
        return etcd3.client("127.0.0.1", m.client_port, timeout=30, **tls)

    def compact(self, revision: int) -> None:
        """Drop history before ``revision`` (physically, on every member)."""
        with self.client(next(i for i, m in enumerate(self.members) if m.running())) as c:
            c.compact(revision, physical=True)

    def defragment(self) -> None:
        for i, m in enumerate(self.members):
            if m.running():
                with self.client(i) as c:
                    c.defragment()

    def db_size(self, i: int = 0) -> int:
        """Bytes of member i's database file (etcd's own gauge)."""
        return int(_metric(self.members[i], "etcd_mvcc_db_total_size_in_bytes") or 0)

    def leader(self) -> int:
        """Index of the member that is the raft leader now."""
        for i, m in enumerate(self.members):
            if m.running() and _metric(m, "etcd_server_is_leader") == 1:
                return i
        raise RuntimeError("no etcd member is leader")


def _metric(m: EtcdMember, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{m.metrics_port}/metrics",
                                    timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


@pytest.fixture
def etcd_cluster(tmp_path: Path) -> Iterator[Callable[..., EtcdCluster]]:
    """A factory: ``etcd_cluster(size=1, tls=None, extra=())`` starts a healthy cluster."""
    if etcd_binary() is None:
        pytest.skip(SKIP_LINE)
    made: list[EtcdCluster] = []

    def make(size: int = 1, *, tls: TlsFiles | None = None,
             extra: tuple[str, ...] = ()) -> EtcdCluster:
        c = EtcdCluster(tmp_path / f"etcd{len(made)}", size, tls=tls, extra=extra)
        made.append(c)
        return c.start()
    yield make
    for c in made:
        c.stop()


@pytest.fixture(scope="module")
def etcd_single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One 1-member cluster shared by a module's tests (each uses its own key prefix)."""
    if etcd_binary() is None:
        pytest.skip(SKIP_LINE)
    c = EtcdCluster(tmp_path_factory.mktemp("etcd"), 1)
    try:
        yield c.start()
    finally:
        c.stop()
