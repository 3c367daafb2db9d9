"""Freeing a superseded generation a slice at a time (flowd.storage.fsio.release).

The one property that matters for data: release never cuts down bytes that
anyone can still reach, by another name or through a descriptor opened
earlier; it only spares the disk one giant free (measured: a 30 ms stall of
every other fsync after unlinking a 435 MB file with online discard)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_snapshot import flows, lines_of, read

from flowd.storage import fsio
from flowd.storage import snapshot as smod
from flowd.storage.pacing import Pacer
from flowd.storage.snapshot import PREVIOUS, SnapshotFiles, View

BODY = b"0123456789abcdef" * (1 << 16)  # 1 MiB


@pytest.fixture
def small_steps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Steps of 256 KiB (so a 1 MiB file takes several), and the sizes cut to."""
    cuts: list[int] = []
    real = fsio.IO.ftruncate
    monkeypatch.setattr(fsio, "RELEASE_STEP", 256 << 10)

    def ftruncate(fd: int, size: int) -> None:
        cuts.append(size)
        real(fd, size)
    monkeypatch.setattr(fsio.IO, "ftruncate", ftruncate)
    return cuts


def test_a_file_nobody_holds_is_cut_down_then_gone(tmp_path: Path, small_steps: list[int]) -> None:
    path = tmp_path / "old"
    path.write_bytes(BODY)
    freed: list[int] = []
    fsio.release(path, freed.append)
    assert not path.exists()
    assert small_steps == [768 << 10, 512 << 10, 256 << 10, 0]
    assert freed == [256 << 10, 512 << 10, 768 << 10, 1 << 20]  # after each step: a pacer


def test_a_file_with_another_name_keeps_every_byte(tmp_path: Path,
                                                  small_steps: list[int]) -> None:
    path, other = tmp_path / "old", tmp_path / "other"
    path.write_bytes(BODY)
    os.link(path, other)
    fsio.release(path)
    assert not path.exists()
    assert other.read_bytes() == BODY
    assert small_steps == []


def test_a_reader_that_opened_it_reads_it_whole(tmp_path: Path, small_steps: list[int]) -> None:
    path = tmp_path / "old"
    path.write_bytes(BODY)
    with open(path, "rb") as reader:
        head = reader.read(10)
        fsio.release(path)
        assert not path.exists()
        assert head + reader.read() == BODY
    assert small_steps == []


def test_a_missing_file_is_nothing_to_do(tmp_path: Path) -> None:
    fsio.release(tmp_path / "absent")


def test_rotation_frees_the_superseded_generation(tmp_path: Path,
                                                  small_steps: list[int]) -> None:
    files = SnapshotFiles(tmp_path)
    for rev in (10, 20, 30):  # the third install supersedes the first file
        files.write(View(lines_of(flows(3000)), None, rev, rev))
    assert read(tmp_path / "flows.json")["meta"]["revision"] == 30
    assert read(tmp_path / PREVIOUS)["meta"]["revision"] == 20
    assert small_steps and small_steps[-1] == 0  # the first file, cut down
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []
    assert files.superseded is None
    assert smod.fingerprint(os.stat(tmp_path / "flows.json")) == files.known


def test_a_paced_rotation_frees_through_the_pacer_and_counts_its_waits(
        tmp_path: Path, small_steps: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int]] = []

    class Recording(Pacer):
        def __call__(self, done: int) -> None:
            calls.append(("write" if self.rate == 1000 else "free", done))
            self.slept += 1.0
    files = SnapshotFiles(tmp_path)
    monkeypatch.setattr(smod, "PACED_FLUSH_EVERY", 64 << 10)
    for rev in (10, 20):
        files.write(View(lines_of(flows(3000)), None, rev, rev))
    inst = files.write(View(lines_of(flows(3000)), None, 30, 30), Recording(1000))
    kinds = [kind for kind, _ in calls]
    assert kinds and kinds == sorted(kinds, reverse=True)  # writes, then frees
    assert "free" in kinds and small_steps[-1] == 0
    assert inst.slept == len(calls)
    assert read(tmp_path / "flows.json")["meta"]["revision"] == 30
