"""What a new user and an operator hit first: versions, --json anywhere, stop,
autostart, hints, one-line failures with the table's codes, a client that waits for a
daemon that is starting, idempotent imports, doctor and status agreeing."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import portalocker
from flowd_client import FlowClient
from flowd_client.discovery import is_locked
from flowd_client.exitcodes import FAILED, OK, UNAVAILABLE, USAGE
from test_cli import assert_one_line_error, flowctl, jsonout, ok
from test_service import stop_every_holder

TIMEOUT = 60


def test_versions_agree(daemon) -> None:
    version = importlib.metadata.version("flowd")
    d = subprocess.run([sys.executable, "-m", "flowd", "--version"], capture_output=True,
                       text=True, timeout=TIMEOUT)
    c = flowctl("--version")
    assert (d.returncode, d.stdout.strip()) == (OK, f"flowd {version}")
    assert (c.returncode, c.stdout.strip()) == (OK, f"flowctl {version}")
    with daemon.client() as client:
        assert client.hello()["server"] == version


def test_json_before_or_after_the_command(daemon) -> None:
    d = daemon.data_dir
    fid = ok("add", "x", data_dir=d).strip()
    after = json.loads(ok("ls", "--json", data_dir=d))
    before = json.loads(ok("--json", "ls", data_dir=d))
    assert before == after and before["current_flow_id"] == fid
    assert json.loads(ok("--json", "show", fid, data_dir=d))["id"] == fid


def test_help_shows_the_exit_codes() -> None:
    from flowd_client.exitcodes import epilog

    flowd_help = subprocess.run([sys.executable, "-m", "flowd", "--help"], capture_output=True,
                                text=True, timeout=TIMEOUT).stdout
    for text in (flowd_help, flowctl("--help").stdout, flowctl("stop", "--help").stdout):
        assert epilog() in text


# ------------------------------------------------------------------ stop


def test_stop_signals_the_lock_holder_and_waits(daemon) -> None:
    proc = flowctl("stop", "--timeout", "30", data_dir=daemon.data_dir)
    assert proc.returncode == OK, proc.stderr
    assert f"pid {daemon.proc.pid}" in proc.stdout
    assert not is_locked(daemon.data_dir)
    assert daemon.proc.wait(TIMEOUT) == 0  # a clean stop: final snapshot written
    assert_one_line_error(flowctl("stop", data_dir=daemon.data_dir), UNAVAILABLE)


def test_stop_refuses_a_pid_that_does_not_hold_the_lock(daemon) -> None:
    """flowd.lock is only a claim: a pid written there that the kernel does not list as
    the lock's holder is never signalled."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    lock = daemon.data_dir / "flowd.lock"
    original = lock.read_bytes()
    try:
        info = json.loads(original)
        lock.write_text(json.dumps({**info, "pid": bystander.pid}))
        proc = flowctl("stop", data_dir=daemon.data_dir)
        assert_one_line_error(proc, FAILED)
        assert "held by pid" in proc.stderr
        assert bystander.poll() is None and daemon.proc.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
        lock.write_bytes(original)


def test_stop_needs_a_data_dir(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "flowd_client.cli", "--endpoint",
                           f"ipc://{tmp_path}/x.sock", "stop"], capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert_one_line_error(proc, USAGE)


# ------------------------------------------------------------------ autostart and hints


def test_autostart_flag_and_environment(tmp_path: Path) -> None:
    for how, env in ((["--autostart"], {}), ([], {"FLOWD_AUTOSTART": "1"})):
        d = tmp_path / f"auto{len(env)}"
        proc = subprocess.run([sys.executable, "-m", "flowd_client.cli", "--data-dir", str(d),
                               "--timeout", "30", *how, "ls"], capture_output=True, text=True,
                              timeout=TIMEOUT, env={**os.environ, **env})
        try:
            assert proc.returncode == OK, proc.stderr
            assert proc.stdout.strip() == "no flows"
        finally:
            stop_every_holder(d)


def test_hints_name_what_the_user_can_do_from_there(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FLOWD_AUTOSTART"}
    run = [sys.executable, "-m", "flowd_client.cli", "--data-dir", "./data", "ls"]
    plain = subprocess.run(run, capture_output=True, text=True, cwd=tmp_path, env=env,
                           timeout=TIMEOUT)
    assert_one_line_error(plain, UNAVAILABLE)
    assert "--autostart" in plain.stderr and "autostart=True" not in plain.stderr
    assert "make run" not in plain.stderr  # not a flowd checkout
    (tmp_path / "Makefile").write_text("run:\n")
    (tmp_path / "flowd").mkdir()
    (tmp_path / "flowd" / "__main__.py").write_text("")
    checkout = subprocess.run(run, capture_output=True, text=True, cwd=tmp_path, env=env,
                              timeout=TIMEOUT)
    assert "make run" in checkout.stderr
    try:
        FlowClient(tmp_path / "none", timeout=0.5).ping()
    except Exception as exc:  # noqa: BLE001 - the message is what is tested
        assert "autostart=True" in str(exc) and "--autostart" not in str(exc)


# ------------------------------------------------------------------ one line, right code


def test_a_regular_file_as_data_dir_is_a_usage_error(tmp_path: Path) -> None:
    file = tmp_path / "not-a-dir"
    file.write_text("x")
    for cmd in (["ls"], ["status"], ["doctor"], ["stop"]):
        proc = flowctl(*cmd, data_dir=file)
        assert_one_line_error(proc, USAGE)
        assert "is not a directory" in proc.stderr
    for where in (file, file / "sub"):
        d = subprocess.run([sys.executable, "-m", "flowd", "--data-dir", str(where)],
                           capture_output=True, text=True, timeout=TIMEOUT)
        assert d.returncode == USAGE and d.stderr.count("\n") == 1, d.stderr
        assert d.stderr.startswith("flowd: ") and "not a directory" in d.stderr


def test_usage_errors_are_one_line(daemon) -> None:
    for args in (["ls", "extra"], ["show"], ["--json", "add", "x"], []):
        proc = flowctl(*args, data_dir=daemon.data_dir)
        assert proc.returncode == USAGE and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith("flowctl") and "--help" in proc.stderr
    d = subprocess.run([sys.executable, "-m", "flowd", "--bogus"], capture_output=True,
                       text=True, timeout=TIMEOUT)
    assert d.returncode == USAGE and d.stderr.count("\n") == 1, d.stderr


def test_import_and_migrate_failures_are_one_flowctl_line(daemon, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"flows": [')
    for args in (["import", str(bad)], ["migrate", str(bad), str(tmp_path / "out.json")],
                 ["import", str(tmp_path / "missing.json")]):
        proc = flowctl(*args, data_dir=daemon.data_dir)
        assert_one_line_error(proc, FAILED)
        assert "flowd.offline" not in proc.stderr


# ------------------------------------------------------------------ a daemon that is starting


def test_client_right_after_popen_waits_for_the_daemon(make_daemon, tmp_path: Path) -> None:
    d = make_daemon(tmp_path / "late").start(wait=False)
    with FlowClient(d.data_dir, timeout=30) as c:  # no wait_ready: the lock is not taken yet
        assert c.ping()["pong"] is True


def test_client_waits_for_a_locked_daemon_that_has_not_advertised(daemon, tmp_path) -> None:
    """A helper holds the lock of another dir with nothing in it (a daemon still
    loading), then advertises the running daemon's endpoint: the client started
    meanwhile waits and is answered."""
    loading = tmp_path / "loading"
    loading.mkdir(mode=0o700)
    info = json.loads((daemon.data_dir / "flowd.lock").read_text())
    script = (f"import json, os, sys, time, portalocker\n"
              f"f = open({str(loading / 'flowd.lock')!r}, 'a+b')\n"
              "portalocker.lock(f, portalocker.LOCK_EX | portalocker.LOCK_NB)\n"
              "print('locked', flush=True)\n"
              "time.sleep(1.0)\n"
              f"info = {{**{info!r}, 'pid': os.getpid()}}\n"
              "f.write(json.dumps(info).encode()); f.flush()\n"
              "time.sleep(60)\n")
    helper = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert helper.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        with FlowClient(loading, timeout=20) as c:
            assert c.ping()["pong"] is True
        assert time.monotonic() - t0 >= 0.5  # it did wait for the advertisement
    finally:
        helper.kill()
        helper.wait()
    assert portalocker  # the helper's import, also ours


# ------------------------------------------------------------------ idempotent import


LEGACY = {"flows": [{"name": "A", "plans": [{"title": "p"}]}, {"name": "B"},
                    {"name": "A", "plans": [{"title": "p"}]}]}


def test_import_without_ids_is_idempotent(daemon, tmp_path: Path) -> None:
    d = daemon.data_dir
    src = tmp_path / "legacy.json"
    src.write_text(json.dumps(LEGACY))
    dry = [ok("import", str(src), "--dry-run", data_dir=d) for _ in range(2)]
    assert dry[0] == dry[1] and "3 to add" in dry[0]
    ids = re.findall(r"^\+ (flow_[0-9a-f]{8}) ", dry[0], flags=re.MULTILINE)
    assert len(set(ids)) == 3
    ok("import", str(src), data_dir=d)
    assert [f["id"] for f in jsonout("ls", data_dir=d)["flows"]] == ids
    rev = jsonout("stats", data_dir=d)["revision"]
    assert "nothing to import" in ok("import", str(src), data_dir=d)
    assert jsonout("stats", data_dir=d)["revision"] == rev


def test_import_never_overwrites_another_flow_under_a_derived_id(daemon, tmp_path) -> None:
    d = daemon.data_dir
    src = tmp_path / "legacy.json"
    src.write_text(json.dumps({"flows": [{"name": "A"}]}))
    ok("import", str(src), data_dir=d)
    (first,) = [f["id"] for f in jsonout("ls", data_dir=d)["flows"]]
    ok("rename", first, "edited since", data_dir=d)
    out = ok("import", str(src), data_dir=d)  # the store no longer holds the file's flow
    flows = {f["id"]: f["name"] for f in jsonout("ls", data_dir=d)["flows"]}
    assert flows[first] == "edited since" and len(flows) == 2 and "1 add" in out
    assert "nothing to import" in ok("import", str(src), data_dir=d)


# ------------------------------------------------------------------ doctor and status


def test_doctor_and_status_agree_on_the_journal(daemon) -> None:
    """Both count the bytes of records (not the space a segment reserves ahead). A
    snapshot may open a segment between the two reads: compare a quiet moment, one
    where status reads the same before and after doctor."""
    d = daemon.data_dir
    for i in range(20):
        ok("add", f"f{i}", data_dir=d)
    for _ in range(50):
        before = jsonout("status", data_dir=d)["journal"]
        doctor = {c["name"]: c for c in jsonout("doctor", data_dir=d)["checks"]}["journal"]
        if jsonout("status", data_dir=d)["journal"] == before:
            break
    m = re.match(r"(\d+) segments, \d+ records, (\d+) bytes", doctor["message"])
    assert m, doctor
    assert (int(m.group(1)), int(m.group(2))) == (before["segments"], before["bytes"])
