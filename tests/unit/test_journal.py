"""Journal framing and scanning: what start-up may trust, drop, or keep aside.

A frame is ``<u32 len><u32 crc32><msgpack>``; a segment starts with a header
frame naming its ``base``. These tests build segments byte by byte and check
what :meth:`Journal.scan` makes of them: torn tails are dropped (never
acknowledged), mid-file damage stops replay and keeps the bytes aside, a later
segment's base voids earlier records at or above it.
"""

from __future__ import annotations

import errno
import logging
import zlib
from pathlib import Path
from typing import Any

import msgpack
import pytest

from flowd.storage.evidence import list_evidence
from flowd.storage.frames import HEADER, MAX_FRAME, frame, frame_at
from flowd.storage.fsio import IO
from flowd.storage.journal import Journal


def rec(rev: int, name: str = "x") -> dict[str, Any]:
    flow = {"id": f"flow_{rev:08x}", "name": name, "plans": [], "created": "t", "updated": "t",
            "revision": rev}
    return {"rev": rev, "ts": "t", "changes": [["add_flow", flow["id"], flow]],
            "current": flow["id"]}


def write_segment(directory: Path, seq: int, base: int, records: list[dict[str, Any]]) -> Path:
    path = directory / f"journal-{seq:08d}.jnl"
    data = frame({"journal": 1, "seq": seq, "base": base}) + b"".join(frame(r) for r in records)
    path.write_bytes(data)
    return path


def revs(records: list[dict[str, Any]]) -> list[int]:
    return [r["rev"] for r in records]


def aside_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if ".corrupt-" in p.name)


# ------------------------------------------------------------------ framing


def test_frame_roundtrip_and_layout() -> None:
    obj = {"rev": 1, "name": "프로젝트", "n": [1, 2.5, None, True]}
    data = frame(obj)
    length, crc = HEADER.unpack_from(data, 0)
    payload = data[HEADER.size:]
    assert length == len(payload) and crc == zlib.crc32(payload)
    assert msgpack.unpackb(payload, raw=False) == obj
    assert frame_at(data, 0) == (obj, len(data))
    two = data + frame({"b": 2})
    assert frame_at(two, len(data)) == ({"b": 2}, len(two))


@pytest.mark.parametrize("damage", ["short_header", "short_payload", "zero_length", "bad_crc",
                                    "huge_length", "crc_ok_not_msgpack"])
def test_frame_at_refuses_damaged_frames(damage: str) -> None:
    good = frame({"rev": 7, "x": "y" * 40})
    if damage == "short_header":
        data = good[:5]
    elif damage == "short_payload":
        data = good[:-1]
    elif damage == "zero_length":
        data = HEADER.pack(0, 0) + good[HEADER.size:]
    elif damage == "bad_crc":
        data = good[:-3] + bytes([good[-3] ^ 0x40]) + good[-2:]
    elif damage == "huge_length":
        data = HEADER.pack(MAX_FRAME + 1, 0) + good[HEADER.size:]
    else:
        payload = b"\xc1\xc1\xc1"  # 0xc1 is never used in msgpack
        data = HEADER.pack(len(payload), zlib.crc32(payload)) + payload
    assert frame_at(data, 0) is None


# ------------------------------------------------------------------ writing and scanning


def test_append_scan_roundtrip(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    assert j.scan().records == []
    j.append([rec(1), rec(2)])
    j.append([rec(3)])
    j.open_segment(4)  # what a snapshot start does
    j.append([rec(4)])
    j.close()
    j2 = Journal(tmp_path)
    out = j2.scan()
    assert revs(out.records) == [1, 2, 3, 4]
    assert [(s.seq, s.base, s.last_rev) for s in out.segments] == [(1, 1, 3), (2, 4, 4)]
    assert out.torn_bytes == 0 and out.corrupt == [] and out.kept_aside == []
    assert out.records[0] == rec(1)


def test_torn_final_record_is_dropped_with_a_warning(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    path = write_segment(tmp_path, 1, 1, [rec(1), rec(2), rec(3)])
    full = path.read_bytes()
    cut = len(full) - len(frame(rec(3))) // 2
    path.write_bytes(full[:cut])
    with caplog.at_level(logging.WARNING, logger="flowd.journal"):
        out = Journal(tmp_path).scan()
    assert revs(out.records) == [1, 2]
    assert out.torn_bytes == cut - (len(full) - len(frame(rec(3))))
    assert out.corrupt == [] and out.kept_aside == []
    assert path.exists() and aside_files(tmp_path) == []
    assert any("torn" in r.getMessage() for r in caplog.records)


def test_zero_tail_is_preallocated_space_not_damage(tmp_path: Path) -> None:
    path = write_segment(tmp_path, 1, 1, [rec(1), rec(2)])
    path.write_bytes(path.read_bytes() + b"\0" * 4096)
    out = Journal(tmp_path).scan()
    assert revs(out.records) == [1, 2]
    assert out.torn_bytes == 0 and out.corrupt == []


@pytest.mark.parametrize("tail", [b"\x07", HEADER.pack(500, 1) + b"abc"])
def test_garbage_tail_is_torn(tmp_path: Path, tail: bytes) -> None:
    path = write_segment(tmp_path, 1, 1, [rec(1), rec(2)])
    path.write_bytes(path.read_bytes() + tail)
    out = Journal(tmp_path).scan()
    assert revs(out.records) == [1, 2]
    assert out.torn_bytes == len(tail) and out.corrupt == []


def test_empty_and_torn_header_segments_are_ignored(tmp_path: Path) -> None:
    write_segment(tmp_path, 1, 1, [rec(1), rec(2)])
    (tmp_path / "journal-00000002.jnl").write_bytes(b"")
    head = frame({"journal": 1, "seq": 3, "base": 3})
    (tmp_path / "journal-00000003.jnl").write_bytes(head[:7])
    out = Journal(tmp_path).scan()
    assert revs(out.records) == [1, 2] and out.corrupt == []


def test_mid_file_corruption_stops_replay_and_keeps_bytes_aside(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = write_segment(tmp_path, 1, 1, [rec(1), rec(2)])
    records = [rec(r) for r in range(3, 9)]
    path = write_segment(tmp_path, 2, 3, records)
    later = write_segment(tmp_path, 3, 9, [rec(9)])
    data = bytearray(path.read_bytes())
    offset = len(frame({"journal": 1, "seq": 2, "base": 3})) + sum(
        len(frame(r)) for r in records[:2])
    data[offset + HEADER.size + 5] ^= 0xFF  # inside record 5's payload
    path.write_bytes(bytes(data))
    later_bytes = later.read_bytes()
    with caplog.at_level(logging.ERROR, logger="flowd.journal"):
        out = Journal(tmp_path).scan()
    assert revs(out.records) == [1, 2, 3, 4]  # everything before the damage
    assert len(out.corrupt) == 1 and "journal-00000002.jnl" in out.corrupt[0]
    assert not path.exists() and not later.exists() and first.exists()
    aside = aside_files(tmp_path)
    assert [p.name.split(".corrupt-")[0] for p in aside] == [
        "journal-00000002.jnl", "journal-00000003.jnl"]
    assert aside[0].read_bytes() == bytes(data)  # byte-identical evidence
    assert aside[1].read_bytes() == later_bytes
    assert sorted(out.kept_aside) == aside
    assert [s.seq for s in out.segments] == [1]
    assert any("corrupt" in r.getMessage() for r in caplog.records)


def test_unreadable_header_with_valid_frames_after_it_is_corruption(tmp_path: Path) -> None:
    write_segment(tmp_path, 1, 1, [rec(1)])
    path = write_segment(tmp_path, 2, 2, [rec(2), rec(3)])
    data = bytearray(path.read_bytes())
    data[HEADER.size + 2] ^= 0xFF
    path.write_bytes(bytes(data))
    out = Journal(tmp_path).scan()
    assert revs(out.records) == [1]
    assert out.corrupt and "unreadable header" in out.corrupt[0]
    assert len(aside_files(tmp_path)) == 1


def test_later_base_voids_earlier_records(tmp_path: Path) -> None:
    write_segment(tmp_path, 1, 1, [rec(1), rec(2), rec(3, "refused"), rec(4, "refused")])
    write_segment(tmp_path, 2, 3, [rec(3, "ok"), rec(4, "ok"), rec(5)])
    out = Journal(tmp_path).scan()
    assert revs(out.records) == [1, 2, 3, 4, 5]
    assert [r["changes"][0][2]["name"] for r in out.records[2:4]] == ["ok", "ok"]


def test_drop_through_keeps_active_and_newer_segments(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.scan()
    j.append([rec(1), rec(2)])
    j.open_segment(3)
    j.append([rec(3)])
    j.open_segment(4)
    j.append([rec(4)])
    assert j.drop_through(100) == 0  # within the retry-key window: kept
    assert j.drop_through(2, keep_seconds=0) == 1
    assert [s.seq for s in j.segments] == [2, 3]
    assert j.drop_through(100, keep_seconds=0) == 1  # the active segment stays
    assert [s.seq for s in j.segments] == [3]
    j.close()
    assert revs(Journal(tmp_path).scan().records) == [4]


def test_obsolete_segments_outlive_a_restart_for_the_key_window(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.scan()
    j.append([rec(1)])
    j.open_segment(2)
    j.append([rec(2)])
    j.close()
    again = Journal(tmp_path)
    assert revs(again.scan().records) == [1, 2]
    assert again.drop_through(1) == 0  # found at start: kept for the window after it
    assert again.drop_through(1, keep_seconds=0) == 1


# ------------------------------------------------------------------ failed appends


class Boom:
    """Replace one IO call with one that fails ``times`` times with ``err``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str, err: int,
                 times: int = 1_000_000, after: int = 0) -> None:
        self.real = getattr(IO, name)
        self.left, self.skip, self.err = times, after, err
        monkeypatch.setattr(IO, name, self)

    def __call__(self, *args: Any) -> Any:
        if self.skip > 0:
            self.skip -= 1
            return self.real(*args)
        if self.left > 0:
            self.left -= 1
            raise OSError(self.err, errno.errorcode[self.err])
        return self.real(*args)


def test_failed_write_leaves_nothing_behind(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    j = Journal(tmp_path)
    j.scan()
    j.append([rec(1)])
    size = j.active.size
    real_write = IO.write

    def short_then_fail(fd: int, data: Any) -> int:
        monkeypatch.setattr(IO, "write", Boom(monkeypatch, "write", errno.ENOSPC).__call__)
        return real_write(fd, bytes(data)[:10])  # a short write, then ENOSPC

    monkeypatch.setattr(IO, "write", short_then_fail)
    with pytest.raises(OSError):
        j.append([rec(2), rec(3)])
    monkeypatch.setattr(IO, "write", real_write)
    assert j.fd is None
    assert (tmp_path / "journal-00000001.jnl").stat().st_size == size  # partial bytes cut
    j.append([rec(2, "again")])
    j.close()
    out = Journal(tmp_path).scan()
    assert revs(out.records) == [1, 2] and out.records[1]["changes"][0][2]["name"] == "again"
    assert out.torn_bytes == 0 and out.corrupt == []


@pytest.mark.parametrize("also_truncate", [False, True], ids=["truncated", "untruncatable"])
def test_failed_fdatasync_is_never_replayed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            also_truncate: bool) -> None:
    """The writers of a group whose fsync failed were told it failed: replay must agree,
    even when the daemon dies before any later write (no later segment to void it)."""
    j = Journal(tmp_path)
    j.scan()
    j.append([rec(1)])
    with monkeypatch.context() as m:
        Boom(m, "fdatasync", errno.EIO, times=1)
        if also_truncate:
            Boom(m, "ftruncate", errno.EIO)
        with pytest.raises(OSError):
            j.append([rec(2, "refused")])
    # crash now: no close, no later append
    if j.fd is not None:
        import os
        os.close(j.fd)
    out = Journal(tmp_path).scan()
    assert revs(out.records) == [1]


def test_old_segment_names_are_renamed_and_a_taken_name_is_kept_aside(tmp_path: Path) -> None:
    """journal-N.log (before 0.13) becomes journal-N.jnl; if both exist (never flowd's
    doing) the .log is evidence, not replayed twice."""
    j = Journal(tmp_path)
    j.open_segment(1)
    j.append([{"rev": 1, "op": "x"}])
    j.close()
    new = tmp_path / "journal-00000001.jnl"
    old = new.with_suffix(".log")
    new.rename(old)
    assert [r["rev"] for r in Journal(tmp_path).scan().records] == [1]
    assert new.exists() and not old.exists()
    old.write_bytes(new.read_bytes())
    assert [r["rev"] for r in Journal(tmp_path).scan().records] == [1]
    kept = list(tmp_path.glob("journal-00000001.log.duplicate-*"))
    assert not old.exists() and kept and list_evidence(tmp_path) == kept


def test_its_fdatasyncs_are_counted_for_a_snapshot_beside_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A paced snapshot leaves its flushes to the journal's (flowd.storage.pacing): each
    strict append's and each relaxed sync's fdatasync counts, a failed one never ends."""
    j = Journal(tmp_path)
    j.scan()
    j.append([rec(1)])
    assert (j.flushes.begun, j.flushes.ended) == (1, 1)
    mark = j.flushes.mark()
    Boom(monkeypatch, "fdatasync", errno.EIO, times=1)
    with pytest.raises(OSError):
        j.append([rec(2)])
    assert (j.flushes.begun, j.flushes.ended) == (2, 1) and not j.flushes.covered(mark)
    relaxed = Journal(tmp_path / "relaxed", durability="relaxed")
    (tmp_path / "relaxed").mkdir()
    relaxed.scan()
    relaxed.append([rec(1)])
    assert relaxed.flushes.ended == 0  # handed to the OS only
    relaxed.sync()
    assert relaxed.flushes.ended == 1
    j.append([rec(2)])
    assert j.flushes.covered(mark)
