"""A snapshot's file written around the page cache (flowd.storage.direct).

The bytes on disk must be exactly the bytes given, whichever way they went:
O_DIRECT in whole blocks, the page cache for the last partial block and the
check patched into the head, or the page cache throughout where the file
system refuses O_DIRECT or one of its writes."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

import pytest

from flowd.storage import direct, fsio

FLUSH = 64 << 10


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """(bytes, O_DIRECT on) of each write the seam saw."""
    seen: list[tuple[int, bool]] = []
    real = fsio.IO.write

    def write(fd: int, data: bytes | memoryview) -> int:
        on = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)
        n = real(fd, data)
        seen.append((n, on))
        return n
    monkeypatch.setattr(fsio.IO, "write", write)
    return seen


def _chunks() -> list[bytes]:
    return [os.urandom(FLUSH * 3 + 17), b"", os.urandom(100), os.urandom(direct.BLOCK),
            os.urandom(FLUSH * 2 + 4095)]


def _write(path: Path, chunks: list[bytes]) -> bytes:
    """write_new with a patch over the head; returns the bytes expected on disk."""
    expect = bytearray(b"".join(chunks))
    expect[10:18] = b"CHECKSUM"
    fsio.write_new(path, chunks, flush_every=FLUSH, patch=lambda: (10, b"CHECKSUM"))
    return bytes(expect)


def test_a_big_file_goes_around_the_page_cache_in_whole_blocks(
        tmp_path: Path, writes: list[tuple[int, bool]], o_direct: bool) -> None:
    path = tmp_path / "new"
    expect = _write(path, _chunks())
    assert path.read_bytes() == expect
    if not o_direct:  # this file system refuses O_DIRECT: the fallback
        assert not any(on for _, on in writes)
        return
    on_direct = [n for n, on in writes if on]
    assert on_direct and all(n % direct.BLOCK == 0 for n in on_direct)
    # only the last partial block went through the page cache
    assert [n for n, on in writes if not on] == [len(expect) % direct.BLOCK]


@pytest.mark.parametrize("size", [0, 1, direct.BLOCK - 1, direct.BLOCK, FLUSH, FLUSH + 1])
def test_every_size_comes_out_whole(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    fsio.write_new(tmp_path / "new", [data], flush_every=FLUSH)
    assert (tmp_path / "new").read_bytes() == data


def test_a_refused_direct_write_falls_back_with_the_same_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real, refused = fsio.IO.write, []

    def write(fd: int, data: bytes | memoryview) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(len(data))
            raise OSError(errno.EINVAL, "wants another alignment")
        return real(fd, data)
    monkeypatch.setattr(fsio.IO, "write", write)
    path = tmp_path / "new"
    expect = _write(path, _chunks())
    assert path.read_bytes() == expect
    assert len(refused) <= 1  # refused once, then the page cache throughout


def test_a_refusal_after_a_short_direct_write_resumes_where_it_stopped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, o_direct: bool) -> None:
    real, calls = fsio.IO.write, []

    def write(fd: int, data: bytes | memoryview) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            calls.append(len(data))
            if len(calls) == 2:  # one block went down, then the rest is refused
                return int(real(fd, memoryview(data)[:direct.BLOCK]))
            if len(calls) == 3:
                raise OSError(errno.EINVAL, "wants another alignment")
        return int(real(fd, data))
    monkeypatch.setattr(fsio.IO, "write", write)
    path = tmp_path / "new"
    expect = _write(path, _chunks())
    assert path.read_bytes() == expect
    assert len(calls) == 3 or not o_direct


def test_a_file_system_without_o_direct_gets_the_same_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        writes: list[tuple[int, bool]]) -> None:
    monkeypatch.setattr(direct, "_set_direct", lambda fd, on: False)
    path = tmp_path / "new"
    expect = _write(path, _chunks())
    assert path.read_bytes() == expect and not any(on for _, on in writes)


def test_a_full_disk_is_an_error_not_a_fallback(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def write(fd: int, data: bytes | memoryview) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(fsio.IO, "write", write)
    with pytest.raises(OSError) as got:
        fsio.write_new(tmp_path / "new", _chunks(), flush_every=FLUSH)
    assert got.value.errno == errno.ENOSPC
