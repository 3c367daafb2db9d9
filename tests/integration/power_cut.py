"""Run a real ``flowd`` that records what it made durable, to simulate a power cut.

    python power_cut.py LEDGER flowd-args...

Wraps the daemon's ``fsio.IO`` seam (nothing else). Every file the daemon
writes through it is followed by inode: how far its bytes reach, and how far
they reached at its last fsync/fdatasync. The ledger (one line per event,
appended at once, so it survives the daemon's SIGKILL) says:

    w INO            the first write to a file
    s INO END NAME KIND  an fsync or fdatasync: bytes [0, END) of INO are durable
                     (on a directory: every rename and link in it so far is)
    f INO END        a ftruncate to END (the bytes after END are gone)
    r DIR SRC DST OLD  SRC renamed over DST in DIR (OLD: a link to the file DST
                     named before, or -)
    l DIR DST        a new link DST in DIR

After SIGKILL, :func:`cut_power` applies it to the data dir the way a power
cut would: each file is cut back to what its last sync covered (a file never
synced loses every byte it was given), and a rename or link that no fsync of
its directory followed is undone. SIGKILL alone keeps the page cache, so
without this a test cannot tell ``--durability none`` from ``strict``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any


class Recorder:
    """Wraps the IO seam's calls, noting in the ledger what each made durable."""

    def __init__(self, io: Any, ledger_path: str) -> None:
        self.io = io
        self.ledger = os.open(ledger_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.olds = Path(ledger_path + ".old")
        self.olds.mkdir(exist_ok=True)
        self.ends: dict[int, int] = {}
        self.renames = 0
        self.real = {name: getattr(io, name)
                     for name in ("write", "fsync", "fdatasync", "ftruncate", "replace", "link")}

    def install(self) -> None:
        io = self.io
        io.write, io.ftruncate = self.write, self.ftruncate
        io.fsync = lambda fd: self.synced("fsync", fd)
        io.fdatasync = lambda fd: self.synced("fdatasync", fd)
        io.replace, io.link = self.replace, self.link

    def note(self, line: str) -> None:
        os.write(self.ledger, (line + "\n").encode())

    def write(self, fd: int, data: bytes | memoryview) -> int:
        n = self.real["write"](fd, data)
        ino = os.fstat(fd).st_ino
        if ino not in self.ends:
            self.ends[ino] = 0
            self.note(f"w {ino}")
        self.ends[ino] = max(self.ends[ino], os.lseek(fd, 0, os.SEEK_CUR))
        return n

    def synced(self, kind: str, fd: int) -> None:
        self.real[kind](fd)
        ino = os.fstat(fd).st_ino
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        self.note(f"s {ino} {self.ends.get(ino, 0)} {name} {kind}")

    def ftruncate(self, fd: int, length: int) -> None:
        self.real["ftruncate"](fd, length)
        ino = os.fstat(fd).st_ino
        self.ends[ino] = min(self.ends.get(ino, 0), length)
        self.note(f"f {ino} {length}")

    def replace(self, src: os.PathLike[str] | str, dst: os.PathLike[str] | str) -> None:
        src, dst = Path(src), Path(dst)
        self.renames += 1
        old = self.olds / str(self.renames)
        try:  # keep the file DST names now: a power cut may bring it back
            os.link(dst, old, follow_symlinks=False)
        except FileNotFoundError:
            old = Path("-")
        self.real["replace"](src, dst)
        self.note(f"r {os.stat(dst.parent).st_ino} {src.name} {dst.name} {old}")

    def link(self, src: os.PathLike[str] | str, dst: os.PathLike[str] | str) -> None:
        self.real["link"](src, dst)
        self.note(f"l {os.stat(Path(dst).parent).st_ino} {Path(dst).name}")


def main() -> int:
    from flowd.__main__ import main as flowd_main
    from flowd.storage.fsio import IO

    Recorder(IO, sys.argv[1]).install()
    return flowd_main(sys.argv[2:])


def read_ledger(ledger: Path) -> tuple[set[int], dict[int, int], list[tuple[str, str]]]:
    """(inodes written, inode -> durable end, (file name, kind) of every sync in order)."""
    written: set[int] = set()
    durable: dict[int, int] = {}
    syncs: list[tuple[str, str]] = []
    for line in ledger.read_text().splitlines():
        kind, ino, *rest = line.split(" ")
        if kind == "w":
            written.add(int(ino))
        elif kind == "s":
            durable[int(ino)] = int(rest[0])
            syncs.append((rest[1], rest[2]))
        elif kind == "f" and int(ino) in durable:
            durable[int(ino)] = min(durable[int(ino)], int(rest[0]))
    return written, durable, syncs


def unsynced_names(ledger: Path, dir_ino: int) -> list[list[str]]:
    """The renames and links in directory ``dir_ino`` after its last fsync, in order."""
    pending: list[list[str]] = []
    for line in ledger.read_text().splitlines():
        kind, *rest = line.split(" ")
        if kind == "s" and int(rest[0]) == dir_ino:
            pending = []
        elif kind in ("r", "l") and int(rest[0]) == dir_ino:
            pending.append([kind, *rest[1:]])
    return pending


def cut_power(data_dir: Path, ledger: Path) -> int:
    """Drop from ``data_dir`` every byte that no sync covered, undo every rename and
    link no directory fsync covered; returns how many bytes and names were dropped."""
    written, durable, _ = read_ledger(ledger)
    dropped = 0
    for entry in reversed(unsynced_names(ledger, data_dir.stat().st_ino)):
        dropped += 1
        if entry[0] == "l":
            (data_dir / entry[1]).unlink(missing_ok=True)
            continue
        src, dst, old = entry[1:]
        os.rename(data_dir / dst, data_dir / src)
        if old != "-":
            os.link(old, data_dir / dst)
    for p in data_dir.iterdir():
        st = p.lstat()
        if st.st_ino not in written or not p.is_file():
            continue
        keep = durable.get(st.st_ino, 0)
        if st.st_size > keep:
            with open(p, "r+b") as f:
                f.seek(keep)
                dropped += len(f.read().rstrip(b"\0"))
                f.truncate(keep)
    return dropped


if __name__ == "__main__":
    sys.exit(main())
