"""Start-up after damage: real daemons, killed with SIGKILL, files broken by hand.

A torn final journal record is dropped with a warning; a bad record in the
middle stops replay there and the journal is kept aside byte for byte; a
corrupt flows.json is rebuilt from an older generation plus the journal; an
unreadable flows.json with nothing older is kept aside (each time under a new
name) and the daemon starts; a legacy file is migrated with a backup.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon

from flowd.storage.frames import HEADER, frame

QUIET = ("--snapshot-interval", "3600")  # no background snapshots: the journal keeps it all


def segments(data_dir: Path) -> list[Path]:
    return sorted(data_dir.glob("journal-*.jnl"))


def aside(data_dir: Path, pattern: str) -> list[Path]:
    return sorted(data_dir.glob(pattern))


def read_doc(data_dir: Path) -> dict[str, Any]:
    return json.loads((data_dir / "flows.json").read_text(encoding="utf-8"))


def frame_offsets(data: bytes) -> list[int]:
    """Start of each frame in a segment (the header frame first)."""
    out, pos = [], 0
    while pos + HEADER.size <= len(data):
        length, _ = HEADER.unpack_from(data, pos)
        if length == 0:
            break  # the zeroed space flowd reserves ahead of its writes
        out.append(pos)
        pos += HEADER.size + length
    return out


def written(data: bytes) -> bytes:
    """A segment's bytes without the preallocated zeros after its last frame."""
    return data.rstrip(b"\0")


def add_and_kill(d: Daemon, n: int, prefix: str = "f") -> list[str]:
    with d.client(timeout=10) as c:
        ids = [c.add_flow(f"{prefix}{i}", [{"i": i}]) for i in range(n)]
    d.kill()
    return ids


def test_torn_final_record_is_dropped_with_a_warning(make_daemon, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    d = make_daemon(data_dir, *QUIET).start()
    ids = add_and_kill(d, 10)
    seg = segments(data_dir)[-1]
    data = written(seg.read_bytes())
    last = frame_offsets(data)[-1]
    cut = last + (len(data) - last) // 2
    with open(seg, "r+b") as f:
        f.truncate(cut)
    d.start()
    with d.client(timeout=10) as c:
        assert list(c.get_all_flows()) == ids[:-1]  # everything before the torn record
        load = c.stats()["load"]
        assert load["torn_bytes"] == cut - last and load["corrupt"] == []
        assert load["replayed"] == 9
        c.add_flow("after")
    assert "torn tail" in d.read_log()
    d.kill()
    d.start()
    with d.client(timeout=10) as c:
        assert [f.name for f in c.get_all_flows().values()] == [*map("f{}".format, range(9)),
                                                                "after"]


@pytest.mark.daemon_errors(r"journal corrupt \(")
def test_mid_file_corruption_stops_replay_and_keeps_the_journal(make_daemon,
                                                               tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    d = make_daemon(data_dir, *QUIET).start()
    ids = add_and_kill(d, 12)
    seg = segments(data_dir)[-1]
    data = bytearray(seg.read_bytes())
    offsets = frame_offsets(bytes(data))
    assert len(offsets) == 13  # header + one record per add_flow
    bad = offsets[6]  # the 6th add's record
    data[bad + HEADER.size + 10] ^= 0xFF
    data[bad + HEADER.size + 11] ^= 0xFF
    seg.write_bytes(bytes(data))
    d.start()
    with d.client(timeout=10) as c:
        assert list(c.get_all_flows()) == ids[:5]
        load = c.stats()["load"]
        assert len(load["corrupt"]) == 1 and seg.name in load["corrupt"][0]
        kept = aside(data_dir, f"{seg.name}.corrupt-*")
        assert len(kept) == 1 and load["kept_aside"] == [kept[0].name]
        assert kept[0].read_bytes() == bytes(data)  # the evidence, byte for byte
        assert not seg.exists()
        c.add_flow("serving")
    assert "journal corrupt" in d.read_log()
    d.kill()  # what replay recovered is safe without the kept-aside segment
    d.start()
    with d.client(timeout=10) as c:
        assert len(c.get_all_flows()) == 6
        assert c.stats()["load"]["corrupt"] == []


def corrupt_in_place(path: Path) -> bytes:
    data = bytearray(path.read_bytes())
    patch = b"\x00garbage\xff" * 2
    data[len(data) // 3: len(data) // 3 + len(patch)] = patch
    with open(path, "r+b") as f:  # same inode: the hard link .flows.json.written breaks too
        f.write(bytes(data))
    return bytes(data)


@pytest.mark.daemon_errors(r"flows.json is unreadable")
def test_corrupt_snapshot_rebuilt_from_older_generation(make_daemon, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    d = make_daemon(data_dir, *QUIET).start()
    with d.client(timeout=10) as c:
        ids = [c.add_flow(f"a{i}") for i in range(5)]
        assert c.save(force=True)
        ids += [c.add_flow(f"b{i}") for i in range(5)]
        c.update_flow(ids[0], name="a0-renamed")
        assert c.save(force=True)  # flows.json.prev is now the first generation
        ids += [c.add_flow(f"c{i}") for i in range(5)]
        c.delete_flow(ids[1])
        want = {fid: f.name for fid, f in c.get_all_flows().items()}
        current = c.current_flow_id
    d.kill()
    assert (data_dir / "flows.json.prev").exists()
    broken = corrupt_in_place(data_dir / "flows.json")
    d.start()
    with d.client(timeout=10) as c:
        assert {fid: f.name for fid, f in c.get_all_flows().items()} == want
        assert c.current_flow_id == current
        load = c.stats()["load"]
        assert load["source"] == "flows.json.prev" and load["corrupt"]
    kept = aside(data_dir, "flows.json.corrupt-*")
    assert len(kept) == 1 and kept[0].read_bytes() == broken
    doc = read_doc(data_dir)  # rewritten at start from the rebuilt state
    assert {fid: f["name"] for fid, f in doc["flows"].items()} == want
    # the good older generation was not rotated out by the unreadable file
    prev = json.loads((data_dir / "flows.json.prev").read_text(encoding="utf-8"))
    assert prev["version"] == "3.0" and len(prev["flows"]) == 5


def test_missing_snapshot_rebuilt_from_written_link(make_daemon, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    d = make_daemon(data_dir, *QUIET).start()
    with d.client(timeout=10) as c:
        ids = [c.add_flow(f"a{i}") for i in range(3)]
        c.save(force=True)
        ids.append(c.add_flow("journal-only"))
    d.kill()
    os.unlink(data_dir / "flows.json")
    d.start()
    with d.client(timeout=10) as c:
        assert list(c.get_all_flows()) == ids
    assert read_doc(data_dir)["flows"].keys() == set(ids)


@pytest.mark.daemon_errors(r"flows.json is unreadable")
@pytest.mark.parametrize("content", [b"", b"\x00\x01garbage{", b'{"version": "3.0", "flo'],
                         ids=["empty", "garbage", "truncated"])
def test_unreadable_snapshot_without_older_generation(make_daemon, tmp_path: Path,
                                                      content: bytes) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    (data_dir / "flows.json").write_bytes(content)
    d = make_daemon(data_dir, *QUIET).start()
    with d.client(timeout=10) as c:
        assert c.get_all_flows() == {}
        fid = c.add_flow("after")
        assert c.stats()["load"]["corrupt"]
    assert d.stop() == 0
    first = aside(data_dir, "flows.json.corrupt-*")
    assert len(first) == 1 and first[0].read_bytes() == content
    assert list(read_doc(data_dir)["flows"]) == [fid]
    # the same again: a second, distinct evidence file; the first is untouched
    (data_dir / "flows.json").write_bytes(content + b" again")
    for extra in (".flows.json.written", "flows.json.prev"):
        (data_dir / extra).unlink(missing_ok=True)
    for seg in segments(data_dir):
        seg.unlink()
    d.start()
    with d.client(timeout=10) as c:
        assert c.get_all_flows() == {}
    kept = aside(data_dir, "flows.json.corrupt-*")
    assert len(kept) == 2 and first[0] in kept
    assert first[0].read_bytes() == content
    assert [p for p in kept if p != first[0]][0].read_bytes() == content + b" again"


@pytest.mark.parametrize("version", [None, "2.0"])
def test_legacy_file_migrates_with_backup(make_daemon, tmp_path: Path,
                                          version: str | None) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    legacy: dict[str, Any] = {
        "flows": [{"id": "flow_a", "name": "프로젝트 A", "plans": [{"t": 1}]},
                  {"name": "no id"},
                  {"id": "flow_a", "name": "dup"}],
        "current_flow": {"id": "flow_a", "name": "프로젝트 A"},
        "custom": {"kept": True},
    }
    if version is not None:
        legacy["version"] = version
    raw = json.dumps(legacy, ensure_ascii=False).encode()
    (data_dir / "flows.json").write_bytes(raw)
    d = make_daemon(data_dir, *QUIET).start()
    with d.client(timeout=10) as c:
        flows = c.get_all_flows()
        assert [f.name for f in flows.values()] == ["프로젝트 A", "no id", "dup"]
        assert list(flows)[0] == "flow_a" and list(flows)[2] == "flow_a_dup"
        assert c.current_flow_id == "flow_a"
        assert c.stats()["load"]["migrated"]
    backups = aside(data_dir, "flows.json.backup-v*")
    assert len(backups) == 1 and backups[0].read_bytes() == raw
    assert backups[0].name.startswith(f"flows.json.backup-v{version or 'none'}-")
    doc = read_doc(data_dir)
    assert doc["version"] == "3.0" and doc["custom"] == {"kept": True}
    assert d.stop() == 0
    d.start()  # a 3.0 file now: no second backup
    assert len(aside(data_dir, "flows.json.backup-v*")) == 1


def test_file_revision_counts_on_across_restarts(make_daemon, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    d = make_daemon(data_dir, *QUIET).start()
    seen = []
    for i in range(3):
        with d.client(timeout=10) as c:
            c.add_flow(f"x{i}")
            c.save(force=True)
        assert d.stop() == 0
        seen.append(read_doc(data_dir)["meta"]["file_revision"])
        d.start()
    assert seen == sorted(seen) and len(set(seen)) == 3, seen


def test_own_snapshot_installed_but_not_linked_is_not_a_stray(make_daemon,
                                                               tmp_path: Path) -> None:
    """flowd died between renaming its new flows.json into place and linking it as
    written: at start that file must not be merged as a foreign one."""
    data_dir = tmp_path / "data"
    d = make_daemon(data_dir, *QUIET).start()
    with d.client(timeout=10) as c:
        keep = c.add_flow("keep")
        gone = c.add_flow("gone")
        c.save(force=True)
        c.update_flow(gone, name="gone-renamed")
        c.save(force=True)  # flows.json: renamed; flows.json.prev: before
        c.delete_flow(gone)  # in the journal only
    d.kill()
    link = data_dir / ".flows.json.written"
    os.unlink(link)
    os.link(data_dir / "flows.json.prev", link)  # the state of that crash window
    d.start()
    with d.client(timeout=10) as c:
        assert list(c.get_all_flows()) == [keep]
        assert c.stats()["stray_merges"] == []
    assert aside(data_dir, "flows.json.stray-*") == []


def test_kill_during_steady_writes_loses_nothing_acknowledged(make_daemon,
                                                              tmp_path: Path) -> None:
    """Snapshots every 50 ms while writing, then SIGKILL: journal and snapshot agree."""
    data_dir = tmp_path / "data"
    d = make_daemon(data_dir, "--snapshot-interval", "0.05", "--journal-max-bytes",
                    "4096").start()
    with d.client(timeout=10) as c:
        ids = [c.add_flow(f"s{i}", [{"pad": "x" * 200}]) for i in range(150)]
        for fid in ids[:20]:
            c.update_flow(fid, name="updated")
        for fid in ids[20:30]:
            c.delete_flow(fid)
        want = {fid: f.name for fid, f in c.get_all_flows().items()}
    d.kill()
    d.start()
    with d.client(timeout=10) as c:
        assert {fid: f.name for fid, f in c.get_all_flows().items()} == want
        assert c.ping()["revision"] == 180


def test_frame_helper_matches_daemon_framing() -> None:
    """frame_offsets() above walks real frames (guards the tests' own helper)."""
    data = frame({"journal": 1, "base": 1}) + frame({"rev": 1}) + frame({"rev": 2})
    assert len(frame_offsets(data)) == 3


def test_old_log_segments_are_renamed_and_replayed(data_dir: Path) -> None:
    """Segments named ``.log`` by older versions: renamed to ``.jnl`` on start, every
    record replayed. A kill between two renames leaves both suffixes; the next start
    renames the rest and loses nothing (each rename is atomic, the scan runs after)."""
    d = Daemon(data_dir, *QUIET, "--journal-max-bytes", "4096").start()
    with d.client(timeout=10) as c:
        ids = [c.add_flow(f"f{i}", [{"pad": "x" * 200}]) for i in range(40)]
        deadline = time.monotonic() + 10  # past 4 KiB: the next timer turn rotates it
        while len(segments(data_dir)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        ids += [c.add_flow(f"g{i}", [{"pad": "x" * 200}]) for i in range(5)]
    d.kill()
    segs = segments(data_dir)
    assert len(segs) >= 2, d.read_log()
    for seg in segs[1:]:  # as if killed after renaming the first: both suffixes present
        seg.rename(seg.with_suffix(".log"))
    assert sorted(data_dir.glob("journal-*.log")) and segments(data_dir)
    d.start()
    assert not list(data_dir.glob("journal-*.log"))
    assert [s.name for s in segments(data_dir)][: len(segs)] == [s.name for s in segs]
    with d.client() as c:
        assert set(c.get_all_flows()) >= set(ids)
    d.stop()
    assert "renamed" in d.read_log()
