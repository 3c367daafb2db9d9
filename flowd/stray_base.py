"""Which file an old tool loaded before it rewrote flows.json: a stray merge's base.

By the number the tool claims first, then by content (:class:`flowd.bases.FileMemory`
remembers both); never by clock. See :func:`pick_base`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .bases import FileMemory
from .digests import Digest, digest, same
from .merge import Base, Unknown


@dataclass
class Picked:
    base: Base | Unknown
    number: int | None
    why: str = ""


def number_of(doc: dict[str, Any]) -> int | None:
    value = (doc.get("meta") or {}).get("file_revision")
    return value if type(value) is int else None


def pick_base(memory: FileMemory, doc: dict[str, Any], ours: Mapping[str, Any],
              suspects: list[str]) -> Picked:
    """The file the tool loaded, by the number it claims and then by content.

    A tool writes the number it loaded plus one. Candidates carry that number
    (:meth:`FileMemory.candidates`); one that shares no flow id with the tool's
    file is no base (a file from elsewhere with a number that happens to
    match). Of several, the one that explains the tool's file with the fewest
    changes; a tie goes to the file flowd wrote itself, then the newer. A
    tool's file that holds a version older than the base's (a flow as it was
    in an earlier file) did not come from that base but through a tool's file
    flowd never saw: its base is unknown.
    """
    theirs = doc["flows"]
    fr = number_of(doc)
    if fr is None:
        return _unknown(memory, suspects, "the file has no meta.file_revision")
    maps = [(i, memory.map_at(i)) for i in memory.candidates(fr)]
    maps = [(i, m) for i, m in maps if not m or any(fid in m for fid in theirs)]
    if not maps:
        return _unknown(memory, suspects, f"flowd remembers no file {fr - 1} that it could be "
                        "an edit of")
    i, m = maps[0] if len(maps) == 1 else _fewest_changes(memory, maps, theirs)
    entry = memory.entries[i]
    stale = _stale_copies(memory, i, m, suspects, theirs)
    if stale:
        return _unknown(memory, suspects, f"it holds versions older than file {entry.number} "
                        f"({', '.join(stale[:3])}): it was edited from a tool's file flowd "
                        "never saw")
    return Picked(Base(m, entry.current), entry.number)


def _stale_copies(memory: FileMemory, index: int, base: dict, suspects: list[str],
                  theirs: dict[str, Any]) -> list[str]:
    """Ids the tool holds as an earlier file had them, unlike the base."""
    older = older_versions(memory, suspects, index)
    out = []
    for fid in older:
        t = digest(theirs[fid])
        if not same(t, base.get(fid)) and any(same(t, v) for v in older[fid]):
            out.append(fid)
    return out


def _fewest_changes(memory: FileMemory, maps: list[tuple[int, dict]],
                    theirs: dict[str, Any]) -> tuple[int, dict]:
    """Candidates differ only where their maps differ: count the tool's changes there."""
    first = maps[0][1]
    where: set[str] = set()
    for _, m in maps[1:]:
        where.update(fid for fid, _ in first.items() ^ m.items())
    mine = {fid: digest(theirs[fid]) if fid in theirs else None for fid in where}

    def rank(item: tuple[int, dict]) -> tuple[int, bool, int]:
        i, m = item
        changes = sum(1 for fid in where if not same(mine[fid], m.get(fid)))
        return (changes, not memory.entries[i].own, -i)
    return min(maps, key=rank)


def _unknown(memory: FileMemory, suspects: list[str], why: str) -> Picked:
    """No base: the merge asks for the versions of suspects only (not of every flow of
    theirs: a Python pass over a million ids)."""
    versions = versions_of(memory, suspects)
    return Picked(Unknown(lambda fid: versions.get(fid, ())), None, why)


def versions_of(memory: FileMemory, ids: Iterable[str]) -> dict[str, list[Digest]]:
    """Every remembered version of each id (for merges without a base)."""
    wanted = set(ids)
    latest = memory.latest_getter()
    out: dict[str, list[Digest]] = {}
    for fid in wanted:
        v = latest(fid)
        if v is not None:
            out[fid] = [v]
    for e in memory.entries:
        for fid in wanted.intersection(e.undo):
            v = e.undo[fid]
            if v is not None:
                out.setdefault(fid, []).append(v)
    return out

def older_versions(memory: FileMemory, ids: Iterable[str], index: int) -> dict[str, list[Digest]]:
    """Versions of each id in files before file ``index`` that differ from its own."""
    wanted = set(ids)
    out: dict[str, list[Digest]] = {}
    for e in memory.entries[1:index + 1]:
        for fid in wanted.intersection(e.undo):
            v = e.undo[fid]
            if v is not None:
                out.setdefault(fid, []).append(v)
    return out
