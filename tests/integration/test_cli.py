"""flowctl end to end: the real command (a subprocess) against real daemons.

A few tests drive ``flowd_client.cli.transfer`` in-process where a subprocess
cannot set the scene (a write racing an import, imports above one batch).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flowd_client import FlowClient
from flowd_client.cli import transfer as cli_transfer
from flowd_client.cli.context import CliError
from flowd_client.exitcodes import BUSY, FAILED, UNAVAILABLE, USAGE

RUN_TIMEOUT = 60
ID = re.compile(r"^flow_[0-9a-f]{8}$")


def flowctl(*args: str, data_dir: Path | None = None,
            timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
    where = ["--data-dir", str(data_dir)] if data_dir is not None else []
    return subprocess.run([sys.executable, "-m", "flowd_client.cli", *where, *args],
                          capture_output=True, text=True, timeout=timeout)


def ok(*args: str, data_dir: Path) -> str:
    proc = flowctl(*args, data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def jsonout(*args: str, data_dir: Path) -> object:
    return json.loads(ok(*args, "--json", data_dir=data_dir))


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int = FAILED) -> None:
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.startswith("flowctl: ") and proc.stderr.count("\n") == 1, proc.stderr


# ------------------------------------------------------------------ flow commands


def test_flow_commands(daemon) -> None:
    d = daemon.data_dir
    a = ok("add", "프로젝트 A", "--plans", '[{"title": "p1"}]', data_dir=d).strip()
    b = ok("add", "B", data_dir=d).strip()
    assert ID.match(a) and ID.match(b)
    lines = ok("ls", data_dir=d).splitlines()
    assert any(a in x and "프로젝트 A" in x and not x.startswith("*") for x in lines)
    assert any(x.startswith("*") and b in x for x in lines)  # add makes current
    assert "p1" in ok("show", a, data_dir=d)
    ok("use", a, data_dir=d)
    assert ok("current", data_dir=d).split()[0] == a
    ok("rename", a, "renamed", data_dir=d)
    assert jsonout("show", a, data_dir=d)["name"] == "renamed"
    ok("rm", b, data_dir=d)
    assert_one_line_error(flowctl("rm", b, data_dir=d))
    assert_one_line_error(flowctl("show", b, data_dir=d))
    assert_one_line_error(flowctl("use", "flow_deadbeef", data_dir=d))
    assert_one_line_error(flowctl("rename", "flow_deadbeef", "x", data_dir=d))
    ok("rm", a, data_dir=d)
    assert_one_line_error(flowctl("current", data_dir=d))  # no current flow
    assert "flows.json written" in ok("save", data_dir=d)


def test_json_outputs_parse(daemon) -> None:
    d = daemon.data_dir
    fid = ok("add", "x", "--plans", '[{"k": [1, 2]}]', data_dir=d).strip()
    listing = jsonout("ls", data_dir=d)
    assert listing["current_flow_id"] == fid
    assert listing["flows"][0]["plans"] == [{"k": [1, 2]}] and listing["flows"][0]["current"]
    assert jsonout("show", fid, data_dir=d)["id"] == fid
    assert jsonout("current", data_dir=d)["id"] == fid
    assert jsonout("stats", data_dir=d)["flows"] == 1
    status = jsonout("status", data_dir=d)
    assert status["running"] and status["pid"] == daemon.proc.pid and status["flows"] == 1
    assert jsonout("doctor", data_dir=d)["ok"] is True
    assert "revision" in ok("stats", data_dir=d)  # human output too


def test_usage_errors_exit_2(daemon) -> None:
    for plans in ("{", "{}", "[1]", '[{"a": 1}, "x"]'):
        assert_one_line_error(flowctl("add", "x", "--plans", plans, data_dir=daemon.data_dir),
                              USAGE)
    assert_one_line_error(flowctl("add", "x" * 5000, data_dir=daemon.data_dir), USAGE)
    assert flowctl("no-such-command", data_dir=daemon.data_dir).returncode == USAGE
    assert flowctl().returncode == USAGE
    assert flowctl("--json", "add", "x", data_dir=daemon.data_dir).returncode == USAGE
    assert jsonout("stats", data_dir=daemon.data_dir)["flows"] == 0  # nothing was added


def test_watch_prints_each_change(daemon) -> None:
    d = daemon.data_dir
    first = ok("add", "before", data_dir=d).strip()
    watcher = subprocess.Popen(
        [sys.executable, "-m", "flowd_client.cli", "--data-dir", str(d), "watch", "--json",
         "--since", "0", "--timeout", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:  # --since 0: "after" is caught up from the history if it comes first
        second = ok("add", "after", data_dir=d).strip()
        out, err = watcher.communicate(timeout=RUN_TIMEOUT)
    finally:
        watcher.kill()
    assert watcher.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    adds = [e for e in events if e["op"] == "add_flow"]  # each add also sets the current flow
    assert [(e["flow_id"], e["revision"]) for e in adds] == [(first, 1), (second, 2)]
    assert events[-1]["current_flow_id"] == second


# ------------------------------------------------------------------ daemon up or down


def test_ping_wait_against_a_down_daemon(tmp_path: Path) -> None:
    t0 = time.monotonic()
    proc = flowctl("ping", "--wait", "1", data_dir=tmp_path / "nothing-here", timeout=30)
    assert time.monotonic() - t0 < 10
    assert_one_line_error(proc, UNAVAILABLE)
    assert "no flowd is running" in proc.stderr and "--autostart" in proc.stderr
    assert "autostart=True" not in proc.stderr and "make run" not in proc.stderr
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "flowd_client.cli", "--endpoint",
                           f"ipc://{tmp_path}/none.sock", "--timeout", "0.5", "ping", "--wait",
                           "1"], capture_output=True, text=True, timeout=30)
    assert time.monotonic() - t0 < 10
    assert_one_line_error(proc, UNAVAILABLE)


def test_ping_wait_sees_a_daemon_come_up(make_daemon, tmp_path: Path) -> None:
    d = make_daemon(tmp_path / "late")
    d.start(wait=False)
    assert "pong" in flowctl("ping", "--wait", "20", data_dir=d.data_dir).stdout


def test_status_up_and_down(daemon) -> None:
    d = daemon.data_dir
    ok("add", "x", data_dir=d)
    out = ok("status", data_dir=d)
    assert "flowd is running" in out and str(daemon.proc.pid) in out
    assert "flows.json" in out and "behind the store" in out
    assert daemon.stop() == 0
    proc = flowctl("status", data_dir=d)
    assert_one_line_error(proc, UNAVAILABLE)
    assert "not running" in proc.stderr
    down = flowctl("status", "--json", data_dir=d)
    assert down.returncode == UNAVAILABLE and json.loads(down.stdout)["running"] is False


# ------------------------------------------------------------------ export, import


def _content(data_dir: Path) -> tuple[list[tuple[str, list]], str | None]:
    doc = jsonout("ls", data_dir=data_dir)
    names = {f["id"]: f["name"] for f in doc["flows"]}
    return [(f["name"], f["plans"]) for f in doc["flows"]], names.get(doc["current_flow_id"])


def _fill(data_dir: Path) -> list[str]:
    ids = [ok("add", f"흐름 {i}", "--plans", json.dumps([{"i": i, "t": "값"}]),
              data_dir=data_dir).strip() for i in range(3)]
    ok("use", ids[1], data_dir=data_dir)
    return ids


def test_export_then_import_into_another_daemon(daemon, make_daemon, tmp_path: Path) -> None:
    _fill(daemon.data_dir)
    out = tmp_path / "export.json"
    ok("export", str(out), data_dir=daemon.data_dir)
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["version"] == "3.0" and len(doc["flows"]) == 3
    other = make_daemon().start()
    ok("import", str(out), data_dir=other.data_dir)
    assert _content(other.data_dir) == _content(daemon.data_dir)
    theirs = [f["id"] for f in jsonout("ls", data_dir=other.data_dir)["flows"]]
    assert theirs == list(doc["flows"])  # ids are kept
    assert "nothing to import" in ok("import", str(out), data_dir=other.data_dir)


def test_import_dry_run_changes_nothing(daemon, tmp_path: Path) -> None:
    ids = _fill(daemon.data_dir)
    out = tmp_path / "export.json"
    ok("export", str(out), data_dir=daemon.data_dir)
    ok("rename", ids[0], "changed", data_dir=daemon.data_dir)
    ok("add", "extra", data_dir=daemon.data_dir)
    before = jsonout("ls", data_dir=daemon.data_dir)
    rev = jsonout("stats", data_dir=daemon.data_dir)["revision"]
    text = ok("import", str(out), "--replace", "--dry-run", data_dir=daemon.data_dir)
    assert f"~ {ids[0]}" in text and "- flow_" in text and "nothing changed" in text
    assert jsonout("ls", data_dir=daemon.data_dir) == before
    assert jsonout("stats", data_dir=daemon.data_dir)["revision"] == rev


def test_import_merges_and_replace_deletes(daemon, tmp_path: Path) -> None:
    d = daemon.data_dir
    ids = _fill(d)
    out = tmp_path / "export.json"
    ok("export", str(out), data_dir=d)
    ok("rename", ids[0], "changed", data_dir=d)
    extra = ok("add", "extra", data_dir=d).strip()
    ok("import", str(out), data_dir=d)  # merge: restores the name, keeps "extra"
    flows = {f["id"]: f["name"] for f in jsonout("ls", data_dir=d)["flows"]}
    assert flows[ids[0]] == "흐름 0" and extra in flows
    assert jsonout("current", data_dir=d)["id"] == extra  # a merge keeps our current flow
    ok("import", str(out), "--replace", data_dir=d)
    doc = jsonout("ls", data_dir=d)
    assert [f["id"] for f in doc["flows"]] == ids and doc["current_flow_id"] == ids[1]


def test_import_legacy_file(daemon, tmp_path: Path) -> None:
    legacy = tmp_path / "legacy.json"
    legacy.write_text(json.dumps({"flows": [{"name": "old"}, {"id": "x", "name": "y"}]}))
    ok("import", str(legacy), data_dir=daemon.data_dir)
    assert [n for n, _ in _content(daemon.data_dir)[0]] == ["old", "y"]


def test_import_aborts_when_the_store_changes(daemon, tmp_path: Path) -> None:
    with FlowClient(daemon.data_dir) as c:
        fid = c.add_flow("mine")
        theirs = {fid: {"id": fid, "name": "theirs", "plans": []}}
        diff = cli_transfer.diff_flows(theirs, c.get_all_flows(), replace=False)
        c.update_flow(fid, name="raced")  # lands between the read and the import
        with pytest.raises(CliError, match="changed meanwhile"):
            cli_transfer.apply_import(c, diff, None)
        assert c.get_flow_by_id(fid).name == "raced"


def test_import_above_one_batch(daemon, tmp_path: Path, capsys) -> None:
    big = tmp_path / "big.json"
    flows = {f"f{i}": {"id": f"f{i}", "name": f"n{i}", "plans": []} for i in range(1500)}
    big.write_text(json.dumps({"version": "3.0", "current_flow_id": None, "flows": flows}))
    proc = flowctl("import", str(big), data_dir=daemon.data_dir)
    assert proc.returncode == 0, proc.stderr
    assert "2 batches" in proc.stderr
    assert jsonout("stats", data_dir=daemon.data_dir)["flows"] == 1500


# ------------------------------------------------------------------ offline: migrate, doctor


def test_migrate_legacy_list_file(tmp_path: Path) -> None:
    src = tmp_path / "flows.json"
    src.write_text(json.dumps({"flows": [{"id": "a", "name": "A"}, {"name": "no id"},
                                         {"id": "a", "name": "dup"}]}))
    original = src.read_bytes()
    proc = flowctl("migrate", str(src), data_dir=tmp_path / "unused")
    assert proc.returncode == 0, proc.stderr
    assert "ids assigned: 1" in proc.stdout and "duplicate ids renamed: 1" in proc.stdout
    doc = json.loads(src.read_text(encoding="utf-8"))
    assert doc["version"] == "3.0" and isinstance(doc["flows"], dict)
    assert list(doc["flows"])[0] == "a" and "a_dup" in doc["flows"]
    (backup,) = tmp_path.glob("flows.json.backup-*")
    assert backup.read_bytes() == original


def test_migrate_refuses_a_running_daemons_dir(daemon) -> None:
    src = daemon.data_dir / "legacy.json"
    src.write_text(json.dumps({"flows": []}))
    proc = flowctl("migrate", str(src), data_dir=daemon.data_dir)
    assert_one_line_error(proc, BUSY)
    assert "running flowd" in proc.stderr


def test_doctor_healthy_and_corrupt(daemon, tmp_path: Path) -> None:
    ok("add", "x", data_dir=daemon.data_dir)
    out = ok("doctor", data_dir=daemon.data_dir)
    assert "FAIL" not in out and "ok    daemon" in out
    bad = tmp_path / "bad"
    bad.mkdir(mode=0o700)
    (bad / "flows.json").write_text('{"version": "3.0", "flows": {"a": ')
    proc = flowctl("doctor", data_dir=bad)
    assert proc.returncode == 1
    assert "FAIL  flows.json" in proc.stdout and "invalid JSON" in proc.stdout


def test_completion_scripts(tmp_path: Path) -> None:
    for shell in ("bash", "zsh"):
        proc = flowctl("completion", shell)
        assert proc.returncode == 0, proc.stderr
        for cmd in ("ping", "status", "ls", "import", "migrate", "doctor", "completion"):
            assert cmd in proc.stdout
        if shutil.which(shell):
            script = tmp_path / f"flowctl.{shell}"
            script.write_text(proc.stdout)
            check = subprocess.run([shell, "-n", str(script)], capture_output=True,
                                   text=True, timeout=RUN_TIMEOUT)
            assert check.returncode == 0, check.stderr
    assert "complete -F _flowctl flowctl" in flowctl("completion", "bash").stdout
    assert flowctl("completion", "fish").returncode == 2
