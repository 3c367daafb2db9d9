"""Writing a new file in flushed pieces (flowd.storage.fsio.write_new).

The snapshot flushes its file every ``flush_every`` bytes so that the journal's
fsync, on the request path, never queues behind more writeback than that; the
snapshot's chunks are bigger than the bound (8192 lines: ~3.5 MB), so the bound
must hold inside a chunk, not only between chunks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flowd.storage import direct, fsio
from flowd.storage.pacing import DeviceFlushes

FLUSH = 64 << 10


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The bytes written between one flush and the next (the last: up to the fsync)."""
    between = [0]
    real_write = fsio.IO.write

    def write(fd: int, data: bytes | memoryview) -> int:
        n = real_write(fd, data)
        between[-1] += n
        return n

    def fdatasync(fd: int) -> None:
        os.fdatasync(fd)
        between.append(0)
    monkeypatch.setattr(fsio.IO, "write", write)
    monkeypatch.setattr(fsio.IO, "fdatasync", fdatasync)
    return between


def test_a_chunk_bigger_than_the_bound_is_flushed_inside(tmp_path: Path,
                                                         written: list[int]) -> None:
    chunks = [os.urandom(FLUSH * 3 + 17), b"", os.urandom(100), os.urandom(FLUSH * 2)]
    path = tmp_path / "new"
    fsio.write_new(path, chunks, flush_every=FLUSH)
    assert path.read_bytes() == b"".join(chunks)
    assert max(written) <= FLUSH
    assert len(written) == sum(map(len, chunks)) // FLUSH + 1


def test_without_a_bound_nothing_is_flushed_before_the_fsync(tmp_path: Path,
                                                             written: list[int]) -> None:
    chunks = [os.urandom(FLUSH * 3), os.urandom(5)]
    path = tmp_path / "new"
    fsio.write_new(path, chunks)
    assert path.read_bytes() == b"".join(chunks) and written == [FLUSH * 3 + 5]


def test_each_flush_reports_the_bytes_written_so_far(tmp_path: Path) -> None:
    chunks = [os.urandom(FLUSH * 2 + 5), os.urandom(FLUSH)]
    reported: list[int] = []
    fsio.write_new(tmp_path / "new", chunks, flush_every=FLUSH, flushed=reported.append)
    assert reported == [FLUSH, 2 * FLUSH, 3 * FLUSH]


#: the journal covers only pieces written around the page cache; dirty pages flush
#: themselves, which test_through_the_page_cache_each_piece_flushes_itself checks anywhere
SKIP_NO_DIRECT = ("this file system refuses O_DIRECT, so pieces go through the page cache "
                  "and flush themselves: that case is checked by "
                  "test_through_the_page_cache_each_piece_flushes_itself")


class ScriptedFlushes(DeviceFlushes):
    """The journal's flushes as a test scripts them: ``covering`` says, piece by piece,
    whether a journal flush began after that piece was written and ended."""

    def __init__(self, covering: list[bool]) -> None:
        super().__init__()
        self.covering = covering

    def covered(self, mark: int) -> bool:
        return self.covering[mark]

    def mark(self) -> int:
        self.begun += 1
        return self.begun - 1


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """"w" for each write of a piece (or of the tail), "s" for each fdatasync."""
    seen: list[str] = []
    real_write = fsio.IO.write

    def write(fd: int, data: bytes | memoryview) -> int:
        seen.append("w")
        return real_write(fd, data)

    def fdatasync(fd: int) -> None:
        seen.append("s")
        os.fdatasync(fd)
    monkeypatch.setattr(fsio.IO, "write", write)
    monkeypatch.setattr(fsio.IO, "fdatasync", fdatasync)
    return seen


def test_pieces_the_journal_flushed_get_no_flush_of_their_own(
        tmp_path: Path, events: list[str], o_direct: bool) -> None:
    """Beside the journal, a piece written around the page cache is flushed by the
    journal's next fdatasync: here only if the next piece is due and none covered it,
    and always before that next piece goes (one piece at most is ever unflushed)."""
    if not o_direct:
        pytest.skip(SKIP_NO_DIRECT)
    chunks = [os.urandom(FLUSH * 4)]
    path = tmp_path / "new"
    fsio.write_new(path, chunks, flush_every=FLUSH,
                   flushes=ScriptedFlushes([True, False, True, True]))
    assert path.read_bytes() == chunks[0]
    # piece 0 covered; piece 1 not: flushed just before piece 2; piece 3: the fsync
    assert events == ["w", "w", "s", "w", "w"]


def test_without_journal_flushes_every_piece_is_flushed_before_the_next(
        tmp_path: Path, events: list[str], o_direct: bool) -> None:
    if not o_direct:
        pytest.skip(SKIP_NO_DIRECT)
    chunks = [os.urandom(FLUSH * 3 + 10)]
    fsio.write_new(tmp_path / "new", chunks, flush_every=FLUSH, flushes=DeviceFlushes())
    assert events == ["w", "s", "w", "s", "w", "w"]  # the last: the tail, then the fsync


def test_through_the_page_cache_each_piece_flushes_itself(
        tmp_path: Path, events: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Dirty pages are written by this file's own flush only: the journal's leaves them."""
    monkeypatch.setattr(direct, "_DIRECT", 0)
    chunks = [os.urandom(FLUSH * 3)]
    fsio.write_new(tmp_path / "new", chunks, flush_every=FLUSH,
                   flushes=ScriptedFlushes([True, True, True]))
    assert events == ["w", "s", "w", "s", "w", "s"]
