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


def main() -> int:
    ledger_path = sys.argv[1]
    from flowd.__main__ import main as flowd_main
    from flowd.storage.fsio import IO

    ledger = os.open(ledger_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    ends: dict[int, int] = {}
    real_write, real_fsync, real_fdatasync = IO.write, IO.fsync, IO.fdatasync
    real_ftruncate, real_replace, real_link = IO.ftruncate, IO.replace, IO.link
    olds = Path(ledger_path + ".old")
    olds.mkdir(exist_ok=True)
    renames = [0]

    def note(line: str) -> None:
        os.write(ledger, (line + "\n").encode())

    def write(fd: int, data: bytes | memoryview) -> int:
        n = real_write(fd, data)
        ino = os.fstat(fd).st_ino
        if ino not in ends:
            ends[ino] = 0
            note(f"w {ino}")
        ends[ino] = max(ends[ino], os.lseek(fd, 0, os.SEEK_CUR))
        return n

    def synced(real, kind: str, fd: int) -> None:
        real(fd)
        ino = os.fstat(fd).st_ino
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        note(f"s {ino} {ends.get(ino, 0)} {name} {kind}")

    def ftruncate(fd: int, length: int) -> None:
        real_ftruncate(fd, length)
        ino = os.fstat(fd).st_ino
        ends[ino] = min(ends.get(ino, 0), length)
        note(f"f {ino} {length}")

    def replace(src: os.PathLike[str] | str, dst: os.PathLike[str] | str) -> None:
        src, dst = Path(src), Path(dst)
        renames[0] += 1
        old = olds / str(renames[0])
        try:  # keep the file DST names now: a power cut may bring it back
            os.link(dst, old, follow_symlinks=False)
        except FileNotFoundError:
            old = Path("-")
        real_replace(src, dst)
        note(f"r {os.stat(dst.parent).st_ino} {src.name} {dst.name} {old}")

    def link(src: os.PathLike[str] | str, dst: os.PathLike[str] | str) -> None:
        real_link(src, dst)
        note(f"l {os.stat(Path(dst).parent).st_ino} {Path(dst).name}")

    IO.replace = replace  # type: ignore[method-assign]
    IO.link = link  # type: ignore[method-assign]
    IO.write = write  # type: ignore[method-assign]
    IO.fsync = lambda fd: synced(real_fsync, "fsync", fd)  # type: ignore[method-assign]
    IO.fdatasync = lambda fd: synced(real_fdatasync, "fdatasync", fd)  # type: ignore[method-assign]
    IO.ftruncate = ftruncate  # type: ignore[method-assign]
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
