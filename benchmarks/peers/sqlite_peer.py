"""SQLite as a peer: what a tool would pick to share a store without a daemon.

One file in WAL mode with ``synchronous=FULL`` (every commit fsynced, so a
commit is as durable as flowd's strict ack), one table ``flows(id TEXT PRIMARY
KEY, doc BLOB)``, autocommit per statement, and each process its own
connection (writers queue on SQLite's file lock; ``busy_timeout`` makes them
wait instead of failing). Reads are in-process B-tree lookups, no IPC.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import orjson

from ..datagen import Dataset, load_docs, sample_flow

BUSY_TIMEOUT_MS = 60_000


def connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                         check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return db


def create(path: Path, dataset: Dataset) -> Path:
    """A database holding the dataset's flows (one transaction; not timed)."""
    if path.exists():
        path.unlink()
    db = connect(str(path))
    db.execute("CREATE TABLE flows (id TEXT PRIMARY KEY, doc BLOB NOT NULL)")
    db.execute("BEGIN")
    db.executemany("INSERT INTO flows VALUES (?, ?)",
                   ((fid, orjson.dumps(doc)) for fid, doc in load_docs(dataset).items()))
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return path


def fresh_copy(template: Path, target: Path) -> Path:
    """A copy of a filled database (WAL checkpointed, so the main file is enough)."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(target) + suffix).unlink(missing_ok=True)
    shutil.copyfile(template, target)
    return target


def row_id(i: int) -> str:
    return f"flow_s{i:x}"


def new_row(i: int) -> tuple[str, bytes]:
    name, plans = sample_flow(i)
    fid = row_id(i)
    return fid, orjson.dumps({"id": fid, "name": name, "plans": plans, "created": "",
                              "updated": "", "revision": 0})


# ---------------------------------------------------------------- worker factories


def reader(path: str, ids: tuple[str, ...]) -> tuple[Callable[[int], object], Callable[[], None]]:
    db = connect(path)
    k = len(ids)
    query = "SELECT doc FROM flows WHERE id = ?"
    return (lambda i: db.execute(query, (ids[i % k],)).fetchone()), db.close


def writer(path: str) -> tuple[Callable[[int], object], Callable[[], None]]:
    db = connect(path)
    sql = "INSERT OR REPLACE INTO flows VALUES (?, ?)"
    return (lambda i: db.execute(sql, new_row(i))), db.close


def mixed(path: str, ids: tuple[str, ...],
          write_every: int) -> tuple[Callable[[int], object], Callable[[], None]]:
    read, close = reader(path, ids)
    write, close2 = writer(path)

    def op(i: int) -> object:
        return write(i) if i % write_every == 0 else read(i)
    return op, lambda: (close(), close2())


def delete_rows(path: str, first: int, count: int) -> None:
    """Undo a write run so the next run measures the same store size."""
    db = connect(path)
    db.execute("BEGIN")
    db.executemany("DELETE FROM flows WHERE id = ?",
                   ((row_id(i),) for i in range(first, first + count)))
    db.execute("COMMIT")
    db.close()
