"""The files of a stray merge: holding the tool's flows.json, and the aside files.

The tool's file is first hard-linked under a holding name, so that what flowd
reads, merges and keeps as evidence is one inode even if another tool replaces
flows.json meanwhile; it then gets its evidence name
(``flows.json.stray-<time>``). The versions a merge does not apply go to
``flows.json.merge-<time>``, written exclusively and fsynced.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from .evidence import list_evidence, move_aside, write_aside
from .fsio import IO
from .snapshot import SNAPSHOT, Fingerprint, fingerprint

log = logging.getLogger("flowd.stray")


def file_fingerprint(path: Path) -> Fingerprint:
    """The fingerprint of the file at ``path`` now (FileNotFoundError if none)."""
    return fingerprint(os.stat(path))

HOLD = ".flows.json.absorbing"
#: an aside file bigger than this is not read back at start (it is still listed)
MAX_MERGE_FILE = 64 << 20


def hold(directory: Path, path: Path) -> tuple[Fingerprint, Path]:
    """Hard-link ``path`` (flows.json) under the holding name; its fingerprint."""
    held = directory / HOLD
    tmp = directory / f"{HOLD}.tmp"
    tmp.unlink(missing_ok=True)
    IO.link(path, tmp)
    IO.replace(tmp, held)
    return fingerprint(os.stat(held)), held


def keep(held: Path, tag: str) -> Path:
    """The held file under its evidence name (``flows.json.<tag>-<time>``)."""
    return move_aside(held, held.parent / SNAPSHOT, tag)


def write_merge(directory: Path, data: bytes) -> Path:
    return write_aside(directory, SNAPSHOT, "merge", data)


def merge_files(directory: Path) -> list[Path]:
    return [p for p in list_evidence(directory) if p.name.startswith(f"{SNAPSHOT}.merge-")]


def _read_small(path: Path) -> bytes | None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_MERGE_FILE:
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read()
    finally:
        os.close(fd)


def read_conflicts(directory: Path) -> Iterator[tuple[str, int, str, bool]]:
    """(file, revision, flow id, flowd deleted it) of every conflict in the aside files."""
    for path in merge_files(directory):
        try:
            data = _read_small(path)
            doc: Any = orjson.loads(data) if data is not None else None
            revision = doc["merge"]["revision"]
            conflicts = doc["conflicts"]
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
            log.info("%s: not a merge record flowd can read (%s)", path.name, exc)
            continue
        if type(revision) is not int or type(conflicts) is not dict:
            continue
        for fid, sides in conflicts.items():
            flowd = sides.get("flowd") if type(sides) is dict else None
            yield path.name, revision, fid, flowd is None
