"""A flow as the daemon holds it: its line of flows.json, ``    "<id>": {...}``.

The store keeps each flow as the exact bytes it has in the file flowd writes
(one flow per line), not as Python dicts and lists: a million flows are then
a million bytes objects, which cost a fraction of the memory, give the cyclic
GC nothing to traverse, load by splitting lines and snapshot by joining them.
A flow is decoded only where an operation needs its values, into a fresh
dict the caller may change freely.

The name is the one value the store indexes, so it is read straight from the
line when the line has the canonical layout (``{"id":...,"name":"...",``),
which every line flowd encodes has; any other line is decoded instead.
"""

from __future__ import annotations

import itertools
import operator
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import orjson

Flow = dict[str, Any]
#: meta keys of flows.json that describe the file itself, not the store: never kept
CHECK_KEY = "lines_crc32"
FILE_META = frozenset((CHECK_KEY, "last_saved", "file_revision", "revision"))
INDENT = b"    "
_NAME = b',"name":"'
#: a line whose last key is ``revision`` (every line flowd stamps): the value, read
#: from the end. Valid JSON ending ``,"revision":N}`` has that pair at the top level:
#: the quote after the comma opens a key, and only the top object closes at the end.
_TAIL_REVISION = re.compile(rb',"revision":(0|[1-9][0-9]{0,19})\}\Z')
_PAIR_ENDS = frozenset(b",}")
#: the names index keeps 30 bits of a name's hash: a one-digit int (28 bytes, not 36)
KEY_MASK = (1 << 30) - 1


def raw_name_key(raw: bytes) -> int:
    """The names index's key of a name given as its UTF-8 bytes (the loader has them
    from the file: no str is made for a million names only to be hashed)."""
    return hash(raw) & KEY_MASK


def raw_name_keys(raws: Iterable[bytes]) -> list[int]:
    """:func:`raw_name_key` of many names, in C (the loader's million names: a Python
    call per name was 0.26 s, this 0.18)."""
    return list(map(operator.and_, map(hash, raws), itertools.repeat(KEY_MASK)))


def name_key(name: str) -> int:
    return raw_name_key(name.encode())


def _key(fid: str) -> bytes:
    return orjson.dumps(fid)


def _offset(fid: str, line: bytes) -> int:
    """Where the flow's JSON object starts in its line."""
    if fid.isascii() and fid.isprintable() and '"' not in fid and "\\" not in fid:
        return len(fid) + 8  # 4 spaces, 2 quotes, ": "
    return len(INDENT) + len(_key(fid)) + 2


def encode(fid: str, flow: Mapping[str, Any]) -> bytes:
    """The flow's line, with ``id`` and ``name`` first so that the name can be read
    without decoding (a flow built elsewhere may hold its keys in any order)."""
    keys = iter(flow)
    if (next(keys, None) != "id" or next(keys, None) != "name") and "name" in flow and "id" in flow:
        flow = {"id": flow["id"], "name": flow["name"], **flow}
    return b"%s%s: %s" % (INDENT, _key(fid), orjson.dumps(flow))


def decode(fid: str, line: bytes) -> Flow:
    flow: Flow = orjson.loads(memoryview(line)[_offset(fid, line):])
    return flow


def name_of(fid: str, line: bytes) -> str:
    """The flow's name, read from its line (no decode for a canonical line)."""
    start = _offset(fid, line)
    head = b'{"id":%s%s' % (_key(fid), _NAME)
    if line.startswith(head, start):
        begin = start + len(head)
        end = line.find(b'"', begin)
        raw = line[begin:end]
        if end > 0 and b"\\" not in raw:
            return raw.decode()
    name = decode(fid, line).get("name")
    return name if type(name) is str else ""


def revision_of(fid: str, line: bytes) -> Any:
    """The flow's ``revision`` (0 if it has none), read from the line's end when it is
    the last key, decoded otherwise."""
    m = _TAIL_REVISION.search(line, max(0, len(line) - 40))
    if m is not None:
        return int(m[1])
    return decode(fid, line).get("revision", 0)


def changed_after(lines: Mapping[str, bytes], revision: int,
                  ids: Iterable[str] | None = None) -> list[str]:
    """Ids whose flow is at a revision above ``revision``, in order: a stray merge's
    flows changed since a file, decoding only lines laid out otherwise (decoding all
    of them was 0.5 s of a 100k-flow merge). ``ids``: only those (gone ones skipped)."""
    if ids is None:
        return [fid for fid, line in lines.items() if revision_of(fid, line) > revision]
    get = lines.get
    return [fid for fid in ids if (line := get(fid)) is not None
            and revision_of(fid, line) > revision]


def unheld(lines: Mapping[str, bytes], flows: Mapping[str, Flow]) -> list[str]:
    """Ids of ``flows`` whose line does not begin with that flow's pairs, as bytes, in
    ``flows``' order. What it leaves out is a sub-map of the line's flow, exactly: the
    line starts with the same keys and values, each pair whole. What it keeps may
    still be one (other key order, ``1`` against ``1.0``): the caller compares those.
    A stray merge's first pass: an old tool's copy of an untouched flow is flowd's
    line minus ``revision``, so a million of them cost no decode."""
    heads: dict[str, bytes | None] = {}
    for fid, flow in flows.items():
        try:
            heads[fid] = encode(fid, flow)  # the line flowd would write for theirs
        except TypeError:  # a value orjson cannot write: the caller looks at it
            heads[fid] = None
    return unheld_lines(lines, heads)


def unheld_lines(lines: Mapping[str, bytes], heads: Mapping[str, bytes | None]) -> list[str]:
    """:func:`unheld` for flows given as their lines (``encode`` of each without
    ``revision``; None for one that has none): the ids, in ``heads``' order, whose line
    in ``lines`` does not begin with that head minus its closing brace, pair whole."""
    get, ends = lines.get, _PAIR_ENDS
    out = []
    for fid, head in heads.items():
        line = get(fid)
        if line is None or head is None:
            out.append(fid)
            continue
        n = len(head) - 1  # without the closing brace
        if not line.startswith(head[:n]) or len(line) <= n or line[n] not in ends:
            out.append(fid)
    return out


class FlowTable(Mapping[str, Flow]):
    """The store's flows by id, in creation order: a dict of lines, read as flows.

    ``lines`` is what the daemon's hot paths use (membership, order, the
    snapshot); reading a flow through the mapping decodes it."""

    __slots__ = ("lines", "name_keys")

    def __init__(self, lines: dict[str, bytes] | None = None) -> None:
        self.lines: dict[str, bytes] = {} if lines is None else lines
        #: the flows' name keys (:func:`name_key`) in order, when a loader read them with
        #: the lines (the store indexes them once and drops the list)
        self.name_keys: Sequence[int] | None = None

    def __getitem__(self, fid: str) -> Flow:
        return decode(fid, self.lines[fid])

    def get(self, fid: str, default: Any = None) -> Any:  # noqa: D102 - Mapping.get
        line = self.lines.get(fid)
        return default if line is None else decode(fid, line)

    def __contains__(self, fid: object) -> bool:
        return fid in self.lines

    def __iter__(self) -> Iterator[str]:
        return iter(self.lines)

    def __len__(self) -> int:
        return len(self.lines)

    def copy(self) -> FlowTable:
        """A table that no later change of this one reaches (the lines are shared)."""
        return FlowTable(self.lines.copy())

    def __repr__(self) -> str:
        return f"FlowTable({len(self.lines)} flows)"
