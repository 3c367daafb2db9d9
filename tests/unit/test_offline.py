"""Tests for flowd.offline and flowd.doctor: migrate, normalize, the read-only checks.

In-process (``main(argv)``), no daemon: these are the parts flowctl runs as a
subprocess, so their exit codes and output are the contract.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import portalocker
import pytest
from flowd_client.cli.output import print_checks
from flowd_client.discovery import LOCK_NAME
from flowd_client.exitcodes import BUSY

from flowd import doctor, offline
from flowd.storage.frames import frame

LEGACY = {
    "flows": [
        {"id": "a", "name": "A", "plans": [{"t": 1}]},
        {"name": "no id"},
        {"id": "a", "name": "dup", "plans": []},
        {"id": "b", "name": "B", "plans": [], "future": {"k": 1}},
    ],
    "current_flow": {"id": "b"},
    "tool_setting": 7,
}


def _write(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir(mode=0o700)
    return d


def _statuses(d: Path) -> dict[str, str]:
    return {c.name: c.status for c in doctor.doctor_checks(d)}


# ------------------------------------------------------------------ migrate


def test_migrate_to_new_file_keeps_source_and_reports(tmp_path: Path, capsys) -> None:
    src = _write(tmp_path / "old.json", LEGACY)
    before = src.read_bytes()
    assert offline.main(["migrate", str(src), str(tmp_path / "new.json")]) == 0
    out = capsys.readouterr().out
    assert "ids assigned: 1" in out and "duplicate ids renamed: 1" in out
    assert src.read_bytes() == before
    doc = json.loads((tmp_path / "new.json").read_text(encoding="utf-8"))
    assert doc["version"] == "3.0"
    ids = list(doc["flows"])
    assert ids[0] == "a" and ids[2] == "a_dup" and ids[3] == "b"
    assert ids[1].startswith("flow_")
    assert doc["flows"]["b"]["future"] == {"k": 1}  # unknown keys survive
    assert doc["tool_setting"] == 7 and doc["current_flow_id"] == "b"
    assert doc["meta"]["file_revision"] == 1


def test_migrate_in_place_keeps_a_backup(tmp_path: Path) -> None:
    src = _write(tmp_path / "flows.json", LEGACY)
    before = src.read_bytes()
    assert offline.main(["migrate", str(src)]) == 0
    backups = list(tmp_path.glob("flows.json.backup-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == before
    assert json.loads(src.read_text(encoding="utf-8"))["version"] == "3.0"
    # a second run has nothing to do and makes no second backup
    assert offline.main(["migrate", str(src)]) == 0
    assert len(list(tmp_path.glob("flows.json.backup-*"))) == 1


def test_migrate_never_overwrites_an_existing_file(tmp_path: Path, capsys) -> None:
    src = _write(tmp_path / "old.json", LEGACY)
    dst = tmp_path / "taken.json"
    dst.write_text("mine")
    assert offline.main(["migrate", str(src), str(dst)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert dst.read_text() == "mine"


def test_migrate_to_stdout(tmp_path: Path, capsys) -> None:
    src = _write(tmp_path / "old.json", LEGACY)
    assert offline.main(["migrate", str(src), "-"]) == 0
    got = capsys.readouterr()
    assert json.loads(got.out)["version"] == "3.0"
    assert "migrated from" in got.err


def test_migrate_refuses_a_dir_a_daemon_holds(data_dir: Path, capsys) -> None:
    src = _write(data_dir / "flows.json", LEGACY)
    with open(data_dir / LOCK_NAME, "a+b") as f:
        portalocker.lock(f, portalocker.LOCK_EX | portalocker.LOCK_NB)
        assert offline.main(["migrate", str(src)]) == BUSY
    assert "running flowd holds" in capsys.readouterr().err
    assert not list(data_dir.glob("*.backup-*"))


def test_corrupt_source_is_one_line_error(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"flows": [')
    assert offline.main(["migrate", str(bad), str(tmp_path / "out.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("flowd.offline: ") and err.count("\n") == 1
    assert not (tmp_path / "out.json").exists()
    assert offline.main(["normalize", str(tmp_path / "missing.json")]) == 1


def test_normalize_prints_3_0(tmp_path: Path, capsys) -> None:
    src = _write(tmp_path / "old.json", [{"name": "top-level list"}])
    assert offline.main(["normalize", str(src)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["version"] == "3.0"
    assert [f["name"] for f in doc["flows"].values()] == ["top-level list"]


def test_summarize_counts_by_kind() -> None:
    notes = ["migrated from no version (1.x) to 3.0: 3 flows (flows were a list)",
             "flow #1 had no id: assigned flow_00000001", "flow #2 had no id: assigned flow_2",
             "duplicate id x renamed x_dup", "something new", "... and 9 more"]
    lines = offline.summarize(notes)
    assert "  ids assigned: 2" in lines and "  duplicate ids renamed: 1" in lines
    assert "  other changes: 1" in lines and any("9 more" in x for x in lines)


# ------------------------------------------------------------------ doctor


def test_doctor_healthy_dir(data_dir: Path, tmp_path: Path, capsys) -> None:
    src = _write(tmp_path / "old.json", LEGACY)
    assert offline.main(["migrate", str(src), str(data_dir / "flows.json")]) == 0
    capsys.readouterr()
    assert offline.main(["doctor", str(data_dir), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True
    assert {c["name"]: c["status"] for c in doc["checks"]} == {
        "data dir": "ok", "files": "ok", "lock": "ok", "flows.json": "ok", "journal": "ok",
        "evidence": "ok", "sockets": "ok", "disk": "ok"}


def test_doctor_corrupt_flows_json_fails(data_dir: Path, capsys) -> None:
    (data_dir / "flows.json").write_text('{"version": "3.0", "flows": {')
    assert offline.main(["doctor", str(data_dir)]) == 1
    doc = json.loads(capsys.readouterr().out)  # data; flowctl doctor prints it
    print_checks(doc["checks"])
    out = capsys.readouterr().out
    assert "FAIL  flows.json" in out and "->" in out


def test_doctor_legacy_schema_warns(data_dir: Path) -> None:
    _write(data_dir / "flows.json", LEGACY)
    assert _statuses(data_dir)["flows.json"] == "warn"


def test_doctor_missing_dir_and_loose_mode(tmp_path: Path) -> None:
    assert [c.status for c in doctor.doctor_checks(tmp_path / "nope")] == ["fail"]
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o755)
    checks = doctor.doctor_checks(loose)
    assert checks[0].status == "warn" and "chmod 700" in checks[0].hint


def _segment(path: Path, *frames: bytes) -> None:
    path.write_bytes(frame({"journal": 1, "seq": 1, "base": 1}) + b"".join(frames))


def test_doctor_journal_torn_tail_is_a_warning(data_dir: Path) -> None:
    seg = data_dir / "journal-00000001.jnl"
    _segment(seg, frame({"rev": 1}), frame({"rev": 2})[:-3])
    head_and_one = len(frame({"journal": 1, "seq": 1, "base": 1})) + len(frame({"rev": 1}))
    assert doctor.scan_segment(seg)[:3] == (1, head_and_one, len(frame({"rev": 2})) - 3)
    assert _statuses(data_dir)["journal"] == "warn"


def test_doctor_journal_corruption_fails_and_moves_nothing(data_dir: Path) -> None:
    seg = data_dir / "journal-00000001.jnl"
    _segment(seg, frame({"rev": 1}), b"\x07garbage\x00", frame({"rev": 2}))
    before = sorted(p.name for p in data_dir.iterdir())
    records, _, torn, corrupt = doctor.scan_segment(seg)
    assert records == 1 and torn == 0 and "bad record" in corrupt
    checks = {c.name: c for c in doctor.doctor_checks(data_dir)}
    assert checks["journal"].status == "fail" and seg.name in checks["journal"].message
    assert sorted(p.name for p in data_dir.iterdir()) == before


def test_doctor_lists_evidence_with_sizes(data_dir: Path) -> None:
    (data_dir / "flows.json.corrupt-20240101T000000.000000Z").write_bytes(b"x" * 10)
    check = {c.name: c for c in doctor.doctor_checks(data_dir)}["evidence"]
    assert check.status == "warn" and "never deletes" in check.hint
    assert check.details == ["flows.json.corrupt-20240101T000000.000000Z  10 bytes"]


def test_doctor_stale_lock_info_warns(data_dir: Path) -> None:
    (data_dir / LOCK_NAME).write_text(json.dumps({"pid": 999_999_999, "endpoint": "ipc://x"}))
    assert _statuses(data_dir)["lock"] == "warn"
