"""Opening the data dir's files: never through a link, only flowd's own; the lock on
the directory itself; the journal's reservation near a full disk; one-line refusals."""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

import pytest
from flowd_client.discovery import is_locked

from flowd.logsetup import RefusalReport
from flowd.storage import journal as journal_mod
from flowd.storage.fsio import IO, atomic_write
from flowd.storage.journal import Journal
from flowd.storage.lock import DataDirBusy, DataDirLock
from flowd.storage.ownfiles import (
    DataDirRefused,
    PlantedFileError,
    claim_dir,
    open_own,
    read_own,
    remove_stale_temps,
)

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown a file to "
                               "another user; run the suite as root (CI does)")


def test_open_own_reads_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"ok")
    assert read_own(tmp_path / "f") == b"ok"


@pytest.mark.parametrize("make", ["symlink", "fifo", "dir", "dangling"])
def test_open_own_refuses_what_is_not_a_regular_file(tmp_path: Path, make: str) -> None:
    path = tmp_path / "f"
    if make == "symlink":
        (tmp_path / "target").write_bytes(b"secret")
        os.symlink(tmp_path / "target", path)
    elif make == "fifo":
        os.mkfifo(path)  # a blocking open would hang here
    elif make == "dir":
        path.mkdir()
    else:
        os.symlink(tmp_path / "missing", path)
    for flags in (os.O_RDONLY, os.O_RDWR | os.O_CREAT, os.O_WRONLY):
        with pytest.raises(PlantedFileError) as err:
            os.close(open_own(path, flags))
        assert str(path) in str(err.value)
    assert not (tmp_path / "missing").exists()  # O_CREAT did not create a link's target


@root_only
def test_open_own_refuses_another_users_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"theirs")
    os.chown(path, 65534, 65534)
    with pytest.raises(PlantedFileError, match="belongs to uid 65534"):
        read_own(path)


def test_atomic_write_never_writes_through_a_planted_temp_name(tmp_path: Path) -> None:
    (tmp_path / "target").write_bytes(b"secret")
    for pid in (os.getpid(), 0):  # the old fixed temp names
        os.symlink(tmp_path / "target", tmp_path / f".out.json.tmp-{pid}")
    atomic_write(tmp_path / "out.json", [b"{}"])
    assert (tmp_path / "out.json").read_bytes() == b"{}"
    assert (tmp_path / "target").read_bytes() == b"secret"


def test_stale_temps_are_removed_links_are_not(tmp_path: Path) -> None:
    (tmp_path / ".flows.json.tmp-0123456789abcdef").write_bytes(b"half a snapshot")
    os.symlink("/etc/hostname", tmp_path / ".flows.json.tmp-fedcba9876543210")
    (tmp_path / "flows.json.corrupt-20240101T000000.000000Z").write_bytes(b"evidence")
    assert remove_stale_temps(tmp_path) == [".flows.json.tmp-0123456789abcdef"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".flows.json.tmp-fedcba9876543210", "flows.json.corrupt-20240101T000000.000000Z"]


def test_claim_dir_tightens_a_loose_dir(tmp_path: Path, caplog) -> None:
    d = tmp_path / "d"
    d.mkdir()
    os.chmod(d, 0o777)
    with caplog.at_level(logging.WARNING):
        os.close(claim_dir(d))
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    os.chmod(d, 0o750)
    os.close(claim_dir(d, gid=os.getegid()))  # a socket group allows 0750 as it is
    assert stat.S_IMODE(d.stat().st_mode) == 0o750


@root_only
def test_claim_dir_refuses_another_users_dir(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir(mode=0o700)
    os.chown(d, 65534, 65534)
    with pytest.raises(DataDirRefused, match="belongs to uid 65534"):
        claim_dir(d)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700 and d.stat().st_uid == 65534


def test_claim_dir_refuses_a_link_to_a_dir(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(DataDirRefused, match="symbolic link"):
        claim_dir(tmp_path / "link")


def test_the_directory_lock_survives_a_removed_lock_file(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path)
    first.acquire(claim_dir(tmp_path))
    first.write({"pid": os.getpid()})
    (tmp_path / "flowd.lock").unlink()
    assert is_locked(tmp_path)  # clients still see a daemon
    second = DataDirLock(tmp_path)
    with pytest.raises(DataDirBusy, match="flowd.lock is missing"):
        second.acquire(claim_dir(tmp_path), wait=0.1)
    note = first.check()
    assert note is not None and "created it again" in note
    assert first.check() is None
    assert (tmp_path / "flowd.lock").read_bytes().startswith(b"{")
    with pytest.raises(DataDirBusy, match=f"pid {os.getpid()}"):
        second.acquire(claim_dir(tmp_path), wait=0.1)
    first.release()
    assert not is_locked(tmp_path)
    second.acquire(claim_dir(tmp_path))
    second.release()


def test_a_replaced_lock_file_is_moved_aside(tmp_path: Path) -> None:
    lock = DataDirLock(tmp_path)
    lock.acquire(claim_dir(tmp_path))
    lock.write({"pid": 1})
    (tmp_path / "flowd.lock").unlink()
    os.symlink("/etc/hostname", tmp_path / "flowd.lock")
    note = lock.check()
    assert note is not None and "symbolic link" in note and "moved aside" in note
    assert (tmp_path / "flowd.lock").is_file() and not (tmp_path / "flowd.lock").is_symlink()
    assert [p for p in tmp_path.iterdir() if p.name.startswith("flowd.lock.foreign-")]
    lock.release()


def test_a_lock_file_given_away_or_opened_up_is_replaced(tmp_path: Path) -> None:
    lock = DataDirLock(tmp_path)
    lock.acquire(claim_dir(tmp_path))
    lock.write({"pid": 1})
    os.chmod(tmp_path / "flowd.lock", 0o666)
    note = lock.check()
    assert note is not None and "mode 0666" in note
    assert stat.S_IMODE((tmp_path / "flowd.lock").stat().st_mode) == 0o600
    assert lock.check() is None and b'"pid": 1' in (tmp_path / "flowd.lock").read_bytes()
    lock.release()


def test_a_hard_linked_lock_file_is_never_truncated(tmp_path: Path) -> None:
    (tmp_path / "precious").write_bytes(b"keep me")
    os.link(tmp_path / "precious", tmp_path / "flowd.lock")
    with pytest.raises(PlantedFileError, match="hard links"):
        DataDirLock(tmp_path).acquire(claim_dir(tmp_path))
    assert (tmp_path / "precious").read_bytes() == b"keep me"


def test_reservation_shrinks_near_a_full_disk(tmp_path: Path, monkeypatch) -> None:
    """fallocate refuses anything over ``room`` bytes: the step halves, down to the
    record, then the write goes ahead without a reservation."""
    room = {"left": 300_000}

    def fallocate(fd: int, offset: int, length: int) -> None:
        if length > room["left"]:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(IO, "fallocate", fallocate)
    j = Journal(tmp_path, "none")
    j.open_segment(1)
    assert 0 < j.allocated <= 300_000
    record = {"rev": 1, "ts": "", "current": None, "changes": [], "blob": "x" * 200_000}
    j.append([record])  # fits the shrunken reservation
    room["left"] = 1000
    rec2 = dict(record, rev=2)
    j.append([rec2])  # no reservation possible: a plain append
    assert j.active is not None and j.active.last_rev == 2
    j.close()
    assert [r["rev"] for r in Journal(tmp_path).scan().records] == [1, 2]
    assert journal_mod.PREALLOC > 300_000


def test_refusal_report_is_one_line_per_interval() -> None:
    lines: list[str] = []

    class Sink(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("test.refusals")
    logger.addHandler(Sink())
    now = [100.0]
    report = RefusalReport(logger, clock=lambda: now[0])
    for _ in range(300):
        report.refused(1, OSError(errno.ENOSPC, "full"))
        now[0] += 0.001
    report.flush()
    assert len(lines) == 1  # the first at once; the rest wait for their second
    now[0] += 1.0
    report.flush()
    assert len(lines) == 2 and "299 writes in 299 groups" in lines[1]
    assert report.total == 300
