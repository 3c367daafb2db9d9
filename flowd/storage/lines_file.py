"""flowd's own flows.json: the top levels indented, one flow per line, and a check.

Written by joining the store's lines in chunks (nothing is encoded at
snapshot time), read back by splitting lines (nothing is parsed but the few
top-level values): a million flows load in the time it takes to split and
index them. The file stays schema 3.0, valid JSON the old tools load and write.

``meta.lines_crc32`` is the CRC-32 of the bytes between ``"flows": {`` and
its closing brace, so a file read back by its lines is checked without being
parsed: a flipped byte inside a flow is refused like a truncated file (the
caller falls back to the previous generation and the journal). The head is
written with a placeholder that is patched in place once the body has gone
by, before the file is fsynced and installed. A file that does not have this
layout (an older flowd's, a tool's) is parsed fully by :mod:`.loader`.
"""

from __future__ import annotations

import itertools
import operator
import re
import threading
import zlib
from array import array
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from ..flow_lines import CHECK_KEY, FlowTable, name_key, raw_name_keys
from .migrate import VERSION, CorruptFileError

if TYPE_CHECKING:
    from .snapshot import View

#: lines joined at a time: ~4 MB of a typical store, a few ms of memcpy holding the GIL
CHUNK = 8192
OPT = orjson.OPT_INDENT_2
_FLOWS = b',\n  "flows": {'
_END = b"\n  }"
_CHECK = b'"meta": {\n    "%s": "' % CHECK_KEY.encode()
_PLACEHOLDER = b"00000000"
#: a line flowd writes, whole (without its comma), its id (unescaped) and its name
#: (maybe escaped): one regex pass finds and copies them all
_LINE = re.compile(rb'\n(    "([^"\\\n]*)": \{"id":"[^"\\\n]*",'
                   rb'"name":"([^"\\\n]*(?:\\.[^"\\\n]*)*)"[^\n]*\})')
_whole, _id, _name = (operator.itemgetter(i) for i in range(3))
#: bytes of the file split at a time: a region's matches (a tuple and three bytes per
#: line) are freed in pools of their own between the lines kept, and pymalloc keeps
#: those pools; small regions reuse the same few (32 MiB regions left 18 MiB unused)
REGION = 4 << 20


class Encoded:
    """The bytes of flows.json for a view; iterate it once, then :meth:`patch`."""

    def __init__(self, view: View) -> None:
        self.view = view
        self.crc = 0
        #: where the check's placeholder sits in the file
        self.offset = -1

    def __iter__(self) -> Iterator[bytes]:
        view = self.view
        meta = {CHECK_KEY: _PLACEHOLDER.decode(),
                "last_saved": datetime.now().isoformat(timespec="milliseconds"),
                "file_revision": view.file_revision, "revision": view.revision,
                **view.meta_extra}
        meta[CHECK_KEY] = _PLACEHOLDER.decode()  # first, and ours whatever meta_extra holds
        # unknown top-level keys go before the flows: the flows close the file, so a
        # reader finds their end from the file's end
        head = orjson.dumps({"version": VERSION, "meta": meta,
                             "current_flow_id": view.current_flow_id, **view.extra},
                            option=OPT)
        self.offset = head.index(_CHECK) + len(_CHECK)
        yield head[:-2] + _FLOWS
        lines = iter(view.lines.values())
        sep, crc = b"\n", 0
        while chunk := list(itertools.islice(lines, CHUNK)):
            body = sep + b",\n".join(chunk)
            crc = zlib.crc32(body, crc)  # releases the GIL over a big buffer
            yield body
            sep = b",\n"
        self.crc = crc
        yield b"}" if sep == b"\n" else _END
        yield b"\n}\n"

    def patch(self) -> tuple[int, bytes]:
        """The check, and where it goes (call after iterating)."""
        return self.offset, b"%08x" % self.crc

    def whole(self) -> bytes:
        """The file in memory, checked (flowctl's output; not the daemon's path)."""
        data = bytearray(b"".join(self))
        offset, check = self.patch()
        data[offset:offset + len(check)] = check
        return bytes(data)


def _body(data: bytes) -> tuple[int, int, int] | None:
    """(start, end, tail start) of the flows body, or None if not flowd's layout."""
    start = data.find(_FLOWS)
    if start < 0 or not data.startswith(b'{\n  "version": "3.0",\n  "meta": {\n'):
        return None
    start += len(_FLOWS)
    if data.startswith(b"}", start):
        return start, start, start + 1
    # the flows close the file flowd writes (unknown keys come before them)
    end = len(data) - len(_END) - 3
    if not data.endswith(_END + b"\n}\n") or end < start:
        return None
    return start, end, end + len(_END)


def read_own(data: bytes, ids: Sequence[str] = ()) -> dict[str, Any] | None:
    """The document (flows as a FlowTable of lines) of a file in flowd's layout; None
    if it is not one (the caller parses it fully); CorruptFileError if it fails its
    check. ``ids``: the ids this file is expected to hold, in order (the memory of
    written files has them): where they match, the table is keyed by those very
    strings, so that a million ids are held once, not twice."""
    found = _body(data)
    if found is None:
        return None
    start, end, tail = found
    try:
        doc = orjson.loads(data[:start] + b"}" + data[tail:])
    except orjson.JSONDecodeError:
        return None
    meta = doc.get("meta")
    if type(meta) is not dict or type(meta.get(CHECK_KEY)) is not str:
        return None
    # the check on the other core while this one splits: zlib lets go of the GIL
    crc = _Crc(memoryview(data)[start:end])
    table = _split(data, start, end, ids)
    if table is None:  # another layout (a tool's dump of flowd's document): parse it
        return None
    if meta[CHECK_KEY] != f"{crc.result():08x}":
        raise CorruptFileError(f"the flows fail the file's check (meta.{CHECK_KEY}): "
                               "the file was changed or damaged after flowd wrote it")
    doc["flows"] = table
    return doc


class _Crc(threading.Thread):
    """The CRC-32 of a buffer, computed in a thread (0.2 s of a million flows' start)."""

    def __init__(self, data: memoryview) -> None:
        super().__init__(name="flowd-load-crc", daemon=True)
        self.data, self.crc = data, 0
        self.start()

    def run(self) -> None:
        self.crc = zlib.crc32(self.data)

    def result(self) -> int:
        self.join()
        return self.crc


def _split(data: bytes, start: int, end: int, ids: Sequence[str]) -> FlowTable | None:
    """The lines, their ids and names, found in C (one regex pass over each region of
    :data:`REGION` bytes): a Python loop over a million lines costs seconds, this a
    fraction of that, and regions bound the temporaries (RSS stays what is kept)."""
    if start == end:
        return FlowTable()
    lines: dict[str, bytes] = {}
    keys = array("I")  # 4 bytes a flow (a list: 8, and an int object of 32)
    count = 0
    while start < end:
        cut = data.find(b",\n", min(start + REGION, end), end)
        cut = end if cut < 0 else cut + 1  # the next region starts at the "\n"
        found = _LINE.findall(data, start, cut)
        whole = list(map(_whole, found))
        # each line found is "\n" + line + "," (the last: no comma): every byte of the
        # region is in one only if none was skipped (a line in another layout)
        if sum(map(len, whole)) + 2 * len(whole) - (cut == end) != cut - start:
            return None  # an escaped id, a key order flowd never writes: parse it
        try:
            fids = list(map(bytes.decode, map(_id, found)))
            known = ids[count:count + len(fids)]
            lines.update(zip(known if known == fids else fids, whole, strict=True))
            keys.extend(_name_keys(list(map(_name, found))))
        except ValueError:  # bad UTF-8, an escape no JSON encoder writes: parse it all
            return None
        count += len(whole)
        start = cut
    if len(lines) != count:
        return None  # a repeated id: the full parser says what happens to it
    table = FlowTable(lines)
    table.name_keys = keys
    return table


def _name_keys(raws: list[bytes]) -> list[int]:
    """The names' index keys, hashed from their bytes; ValueError if one is not text
    an encoder writes (bad UTF-8: an ASCII separator keeps a broken sequence broken
    across names; an escape JSON does not know)."""
    joined = b"\n".join(raws)
    joined.decode()
    keys = raw_name_keys(raws)
    if b"\\" in joined:  # a few escaped names: JSON-decode those
        for i, raw in enumerate(raws):
            if b"\\" in raw:
                keys[i] = name_key(orjson.loads(b'"%s"' % raw))
    return keys
