"""Issue 14 through real daemons on 127.0.0.1 tcp with CURVE: allowed tools read, write,
watch and cache; unknown keys, no key and the wrong server key get NotAllowedError and
change nothing; revoking cuts a tool off (by the directory watch, and by SIGHUP)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Daemon
from flowd_client import AsyncFlowClient, FlowClient, NotAllowedError
from flowd_client.cli import main as flowctl
from flowd_client.curve import ENV_SECRET, ENV_SERVER
from store_probes import revision, wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Remote:
    """A CURVE flowd on 127.0.0.1 and the key files of its tools."""

    def __init__(self, tmp: Path, daemon: Daemon, endpoint: str) -> None:
        self.tmp, self.daemon, self.endpoint = tmp, daemon, endpoint
        self.keys, self.curve = tmp / "keys", tmp / "curve"

    def secret(self, name: str) -> str:
        return str(self.keys / f"{name}.key_secret")

    @property
    def server(self) -> str:
        return str(self.curve / "server.key")

    def client(self, name: str | None, **kw) -> FlowClient:
        keys = {} if name is None else {"curve_secret": self.secret(name),
                                        "curve_server": kw.pop("server", self.server)}
        return FlowClient(endpoint=self.endpoint, timeout=kw.pop("timeout", 5.0), **keys, **kw)

    def keys_cmd(self, *argv: str) -> None:
        assert flowctl(["keys", *argv, "--curve-dir", str(self.curve)]) == 0


def start_remote(tmp_path: Path, make_daemon, monkeypatch, *extra: str) -> Remote:
    port, events = free_port(), free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    d = make_daemon(tmp_path / "data", "--curve-dir", str(tmp_path / "curve"),
                    "--endpoint", endpoint, "--events-endpoint", f"tcp://127.0.0.1:{events}",
                    *extra)
    r = Remote(tmp_path, d, endpoint)
    for name in ("admin", "alice", "mallory"):
        assert flowctl(["keys", "new", name, "--dir", str(r.keys)]) == 0
    for name in ("admin", "alice"):
        r.keys_cmd("allow", str(r.keys / f"{name}.key"))
    d.start(wait=False)
    wait_until(lambda: Path(r.server).exists() or d.proc.poll() is not None, 20.0,
               "server.key made")
    # the Daemon helper's readiness probe (a FlowClient of the data dir) uses the admin key
    monkeypatch.setenv(ENV_SECRET, r.secret("admin"))
    monkeypatch.setenv(ENV_SERVER, r.server)
    d.wait_ready()
    return r


@pytest.fixture
def remote(tmp_path: Path, make_daemon, monkeypatch) -> Remote:
    return start_remote(tmp_path, make_daemon, monkeypatch)


def refused(c: FlowClient) -> bool:
    try:
        c.get_current_flow_id()
    except NotAllowedError:
        return True
    return False


def test_allowed_tool_reads_writes_watches_and_caches(remote: Remote) -> None:
    with remote.client("alice") as alice, remote.client("admin") as admin, \
            remote.client("alice", cache=True) as cached:
        assert alice.events_endpoint() == admin.hello()["events"]  # learnt from hello
        since = revision(alice)
        changes = alice.watch(since=since, timeout=5.0)
        fid = alice.add_flow("from another host", [{"step": 1}])
        assert admin.get_flow_by_id(fid).plans == [{"step": 1}]
        other = admin.add_flow("admin's")
        seen: set[str] = set()
        for change in changes:  # bounded by the watch's idle timeout
            seen.add(change.flow_id)
            if {fid, other} <= seen:
                break
        assert {fid, other} <= seen
        wait_until(lambda: cached.get_flow_by_id(other) is not None, what="cache sees it")
        assert cached.get_flow_by_id(fid).name == "from another host"
        by_key = admin.stats()["curve"]["requests_by_key"]
    assert by_key["alice"] >= 4 and by_key["admin"] >= 2 and "mallory" not in by_key


def test_allowed_async_tool_reads_writes_and_watches(remote: Remote) -> None:
    async def run() -> tuple[str, list[str]]:
        async with AsyncFlowClient(endpoint=remote.endpoint, curve_secret=remote.secret(
                "alice"), curve_server=remote.server, timeout=5.0) as a:
            fid = await a.add_flow("async")
            name = (await a.get_flow_by_id(fid)).name
            since = (await a.ping())["revision"]
            with remote.client("admin") as admin:
                admin.add_flow("watched")
            ops = []
            async for change in a.watch(since=since, timeout=5.0):
                ops.append(change.op)
                if change.op == "set_current":
                    break
            return name, ops
    name, ops = asyncio.run(run())
    assert name == "async" and ops == ["add_flow", "set_current"]


@pytest.mark.parametrize("who", ["unknown key", "no key", "wrong server key"])
def test_refused_tool_gets_key_not_allowed_and_changes_nothing(remote: Remote, who: str,
                                                               monkeypatch) -> None:
    with remote.client("admin") as admin:
        before = admin.get_all_flows(), revision(admin)
    monkeypatch.delenv(ENV_SECRET)
    monkeypatch.delenv(ENV_SERVER)
    name, kw = {"unknown key": ("mallory", {}), "no key": (None, {}),
                "wrong server key": ("alice", {"server": str(remote.keys / "mallory.key")})}[who]
    with remote.client(name, timeout=3.0, **kw) as c:
        with pytest.raises(NotAllowedError) as info:
            c.add_flow("should not land")
    assert remote.endpoint in info.value.message and "key not allowed" in info.value.message
    monkeypatch.setenv(ENV_SECRET, remote.secret("admin"))
    monkeypatch.setenv(ENV_SERVER, remote.server)
    with remote.client("admin") as admin:
        assert (admin.get_all_flows(), revision(admin)) == before
    if who == "unknown key":
        mallory = (remote.keys / "mallory.key").read_text().split('"')[1]
        wait_until(lambda: f"from 127.0.0.1: key {mallory} is not allowed"
                   in remote.daemon.read_log(), what="refusal logged")


def test_unknown_key_async_gets_key_not_allowed(remote: Remote) -> None:
    async def run() -> None:
        async with AsyncFlowClient(endpoint=remote.endpoint, curve_secret=remote.secret(
                "mallory"), curve_server=remote.server, timeout=3.0) as a:
            await a.add_flow("should not land")
    with pytest.raises(NotAllowedError, match="key not allowed"):
        asyncio.run(run())


def test_revoke_alone_cuts_a_connected_tool_off(remote: Remote) -> None:
    with remote.client("alice") as alice, remote.client("admin") as admin:
        alice.add_flow("before")
        remote.keys_cmd("revoke", "alice")  # no signal: the watch of DIR/clients reloads
        wait_until(lambda: refused(alice), what="alice refused")
        rev = revision(admin)
        with pytest.raises(NotAllowedError, match="key not allowed"):
            alice.add_flow("after")
        assert revision(admin) == rev
        assert admin.stats()["curve"]["requests_refused"] >= 2
        remote.keys_cmd("allow", str(remote.keys / "alice.key"))
        wait_until(lambda: not refused(alice), what="alice allowed again")


def test_revoke_and_sighup_without_a_directory_watch(tmp_path: Path, make_daemon,
                                                     monkeypatch) -> None:
    shim = tmp_path / "no-inotify"
    (shim / "inotify_simple").mkdir(parents=True)
    (shim / "inotify_simple" / "__init__.py").write_text('raise ImportError("off")\n')
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(shim), *filter(None, [os.environ.get("PYTHONPATH")])]))
    remote = start_remote(tmp_path, make_daemon, monkeypatch)
    with remote.client("alice") as alice:
        remote.keys_cmd("revoke", "alice")
        alice.add_flow("still served: nothing watches DIR/clients, nothing was signalled")
        remote.daemon.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: refused(alice), what="alice refused after SIGHUP")


def test_ipc_endpoints_stay_plain_with_a_curve_dir(make_daemon, tmp_path: Path) -> None:
    d = make_daemon(tmp_path / "data", "--curve-dir", str(tmp_path / "curve")).start()
    with d.client() as c:
        assert c.get_flow_by_id(c.add_flow("local")).name == "local"


@pytest.mark.parametrize("option", ["--endpoint", "--events-endpoint"])
def test_non_loopback_tcp_without_curve_dir_is_refused(tmp_path: Path, option: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "flowd", "--data-dir", str(tmp_path / "d"),
                           option, f"tcp://0.0.0.0:{free_port()}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "loopback" in lines[0] and "--curve-dir" in lines[0]
    assert not (tmp_path / "d").exists()


def flowctl_run(remote: Remote, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in (ENV_SECRET, ENV_SERVER)}
    return subprocess.run([sys.executable, "-m", "flowd_client.cli", "--endpoint",
                           remote.endpoint, "--timeout", "3", *argv], capture_output=True,
                          text=True, timeout=60, env=env)


def test_flowctl_with_curve_options(remote: Remote) -> None:
    ok = flowctl_run(remote, "--curve-secret", remote.secret("alice"), "--curve-server",
                     remote.server, "add", "by flowctl")
    assert ok.returncode == 0, ok.stderr
    listed = flowctl_run(remote, "--curve-secret", remote.secret("alice"), "--curve-server",
                         remote.server, "ls")
    assert "by flowctl" in listed.stdout
    bad = flowctl_run(remote, "--curve-secret", remote.secret("mallory"), "--curve-server",
                      remote.server, "ls")
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1 and "key not allowed" in bad.stderr
