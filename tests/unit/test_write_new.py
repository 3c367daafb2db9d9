"""Writing a new file in flushed pieces (flowd.storage.fsio.write_new).

The snapshot flushes its file every ``flush_every`` bytes so that the journal's
fsync, on the request path, never queues behind more writeback than that; the
snapshot's chunks are bigger than the bound (8192 lines: ~3.5 MB), so the bound
must hold inside a chunk, not only between chunks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flowd.storage import fsio

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
