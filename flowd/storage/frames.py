"""The framed records of the journal and of the memory of written files' sidecar.

No I/O. A frame is ``<u32 length><u32 crc32><msgpack payload>``; a segment is a
header frame and records. What a bad frame means depends on what follows it: a
torn tail (a record cut short by a crash: never acknowledged) or corruption.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import msgpack

from .checksum import crc32

HEADER = struct.Struct("<II")
MAX_FRAME = 1 << 30
TORN_SCAN_LIMIT = 4 << 20


def frame(obj: Any) -> bytes:
    payload = msgpack.packb(obj, use_bin_type=True)
    return HEADER.pack(len(payload), crc32(payload)) + payload


def frame_at(data: bytes, pos: int) -> tuple[Any, int] | None:
    """Decode the frame at ``pos``; None if it is not a whole, valid frame."""
    if pos + HEADER.size > len(data):
        return None
    length, crc = HEADER.unpack_from(data, pos)
    end = pos + HEADER.size + length
    if length == 0 or length > MAX_FRAME or end > len(data):
        return None
    payload = data[pos + HEADER.size:end]
    if crc32(payload) != crc:
        return None
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=False), end
    except Exception:
        return None


def _is_torn(data: bytes, pos: int) -> bool:
    """A bad frame is a torn tail unless a valid frame follows it."""
    rest = data[pos:]
    if not rest.strip(b"\0"):
        return True
    limit = min(len(data), pos + TORN_SCAN_LIMIT)
    for p in range(pos + 1, limit):
        if frame_at(data, p) is not None:
            return False
    return len(data) - pos <= TORN_SCAN_LIMIT


@dataclass
class Parsed:
    """One segment's bytes, read: the header, the whole records, where they end, and
    how the rest looks: "clean" (nothing, or preallocated zeros), "torn" (a
    record cut short: never acknowledged) or "corrupt" (a bad record with valid
    ones after it, or an unreadable header)."""

    head: dict[str, Any] | None
    records: list[dict[str, Any]]
    end: int
    tail: str


def parse_segment(data: bytes) -> Parsed:
    """Read a segment without touching any file (start-up replay and doctor share it)."""
    got = frame_at(data, 0)
    if got is None or not isinstance(got[0], dict) or "base" not in got[0]:
        if not data.strip(b"\0"):
            return Parsed(None, [], 0, "clean")
        torn = len(data) < HEADER.size or _is_torn(data, 0)
        return Parsed(None, [], 0, "torn" if torn else "corrupt")
    records: list[dict[str, Any]] = []
    pos = got[1]
    while pos < len(data):
        nxt = frame_at(data, pos)
        if nxt is None:
            if not data[pos:].strip(b"\0"):
                return Parsed(got[0], records, pos, "clean")  # preallocated space
            return Parsed(got[0], records, pos, "torn" if _is_torn(data, pos) else "corrupt")
        records.append(nxt[0])
        pos = nxt[1]
    return Parsed(got[0], records, pos, "clean")
