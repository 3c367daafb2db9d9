"""flowd's own flows.json: the top levels indented, one flow per line, and a check.

Written by joining the store's lines in chunks (nothing is encoded at
snapshot time), read back by splitting lines (nothing is parsed but the few
top-level values): a million flows load in the time it takes to split and
index them. The loader reads the file in pieces, each dropped once split, so
the start holds the file's bytes and the store's lines at once only piece by
piece. The file stays schema 3.0, valid JSON the old tools load and write.

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
import queue
import re
import threading
import zlib
from array import array
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from ..flow_lines import CHECK_KEY, FlowTable, name_key, raw_name_keys
from ..heap import release_free_memory
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
#: pieces of a file read in pieces between two ``malloc_trim``: glibc keeps the pages
#: of those freed (the lines kept are not allocated from them), so the start's peak
#: would still be the store's plus the file's
TRIM_EVERY = 16


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


def _body(data: bytes, size: int, last: bytes) -> tuple[int, int, int] | None:
    """(start, end, tail start) of the flows body, or None if not flowd's layout: ``data``
    holds the file's head (at least up to the body), ``last`` ends it (its last bytes),
    ``size`` is its length."""
    start = data.find(_FLOWS)
    if start < 0 or not data.startswith(b'{\n  "version": "3.0",\n  "meta": {\n'):
        return None
    start += len(_FLOWS)
    if data.startswith(b"}", start):
        return start, start, start + 1
    # the flows close the file flowd writes (unknown keys come before them)
    end = size - len(_END) - 3
    if not last.endswith(_END + b"\n}\n") or end < start:
        return None
    return start, end, end + len(_END)


def read_own(data: bytes | list[bytes], ids: Sequence[str] = ()) -> dict[str, Any] | None:
    """The document (flows as a FlowTable of lines) of a file in flowd's layout; None
    if it is not one (the caller parses it fully); CorruptFileError if it fails its
    check. ``data``: the file, or its pieces in order, which are dropped from the list
    as they are split (the file's bytes go while its lines come: the start's peak is
    the store's, not the store's plus the file's). ``ids``: the ids this file is
    expected to hold, in order (the memory of written files has them): where they
    match, the table is keyed by those very strings, so that a million ids are held
    once, not twice."""
    pieces = data if isinstance(data, list) else [data]
    while len(pieces) > 1:  # the first piece must hold the head and the body's first byte
        at = pieces[0].find(_FLOWS)
        if 0 <= at < len(pieces[0]) - len(_FLOWS):
            break
        pieces[:2] = [pieces[0] + pieces[1]]
    if not pieces:
        return None
    found = _body(pieces[0], sum(map(len, pieces)), _last(pieces, len(_END) + 3))
    if found is None:
        return None
    start, end, tail = found
    # the top levels but the flows: before them, and after (b"\n}\n" after a body)
    rest = b"".join(pieces)[tail:] if start == end else b"\n}\n"
    try:
        doc = orjson.loads(pieces[0][:start] + b"}" + rest)
    except orjson.JSONDecodeError:
        return None
    meta = doc.get("meta")
    if type(meta) is not dict or type(meta.get(CHECK_KEY)) is not str:
        return None
    crc = _Crc()  # the check on the other core while this one splits
    try:
        table = _split(_regions(pieces, start, end), ids, crc)
    finally:
        check = crc.result()
    if table is None:  # another layout (a tool's dump of flowd's document): parse it
        return None
    if meta[CHECK_KEY] != f"{check:08x}":
        raise CorruptFileError(f"the flows fail the file's check (meta.{CHECK_KEY}): "
                               "the file was changed or damaged after flowd wrote it")
    doc["flows"] = table
    return doc


def _last(pieces: list[bytes], n: int) -> bytes:
    """The last ``n`` bytes of the pieces joined (fewer if they hold fewer)."""
    taken: list[bytes] = []
    for piece in reversed(pieces):
        taken.append(piece)
        if sum(map(len, taken)) >= n:
            break
    return b"".join(reversed(taken))[-n:]


class _Crc(threading.Thread):
    """The CRC-32 of the buffers put in it, in order, computed in a thread (0.2 s of a
    million flows' start)."""

    def __init__(self) -> None:
        super().__init__(name="flowd-load-crc", daemon=True)
        self.crc = 0
        self.buffers: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
        self.start()

    def run(self) -> None:
        crc, buffers = 0, self.buffers
        while (data := buffers.get()) is not None:
            crc = zlib.crc32(data, crc)
        self.crc = crc

    def result(self) -> int:
        self.buffers.put(None)
        self.join()
        return self.crc


Region = tuple[bytes, int, int, bool]


def _regions(pieces: list[bytes], start: int, end: int) -> Iterator[Region]:
    """The body, bytes ``start`` to ``end`` of the pieces joined, as regions (buffer, from,
    to, last) that each begin at a line's "\n" and end after its comma (the last: at the
    body's end). One piece (the whole file): regions of about :data:`REGION` bytes of it.
    More: each piece's whole lines are a region of that piece, in place; only the lines
    across a seam are copied out, into a region of their own. Each piece is dropped as it
    is reached (held no longer than its own region is split)."""
    if len(pieces) == 1:
        data = pieces.pop()
        while start < end:
            cut = data.find(b",\n", min(start + REGION, end), end)
            cut = end if cut < 0 else cut + 1  # the next region starts at the "\n"
            yield data, start, cut, cut == end
            start = cut
        return
    carry: list[bytes] = []  # the line begun in the pieces before
    base = 0
    for n in itertools.count(1):
        if not pieces:
            break
        if n % TRIM_EVERY == 0:  # the pieces split so far: their pages back to the system
            release_free_memory()
        piece = pieces.pop(0)
        lo, hi = max(start - base, 0), min(end - base, len(piece))
        base += len(piece)
        if hi <= lo:
            continue  # past the body
        cut = piece.rfind(b",\n", lo, hi)
        if cut < 0:  # a line longer than a piece
            carry.append(piece[lo:hi])
            continue
        if carry:  # the line across the seam, alone
            first = piece.find(b",\n", lo, hi)
            seam = b"".join([*carry, piece[lo:first + 1]])
            yield seam, 0, len(seam), False
            lo = first + 1
        if lo < cut + 1:
            yield piece, lo, cut + 1, False
        carry = [piece[cut + 1:hi]]
        del piece
    if carry:
        region = b"".join(carry)
        yield region, 0, len(region), True


def _split(regions: Iterable[Region], ids: Sequence[str],
           crc: _Crc) -> FlowTable | None:
    """The lines, their ids and names, found in C (one regex pass over each region):
    a Python loop over a million lines costs seconds, this a fraction of that, and
    regions bound the temporaries (RSS stays what is kept). Each region goes to the
    check as it is split."""
    lines: dict[str, bytes] = {}
    keys = array("I")  # 4 bytes a flow (a list: 8, and an int object of 32)
    count = 0
    for data, start, cut, last in regions:
        crc.buffers.put(memoryview(data)[start:cut])
        found = _LINE.findall(data, start, cut)
        whole = list(map(_whole, found))
        # each line found is "\n" + line + "," (the last: no comma): every byte of the
        # region is in one only if none was skipped (a line in another layout)
        if sum(map(len, whole)) + 2 * len(whole) - last != cut - start:
            return None  # an escaped id, a key order flowd never writes: parse it
        try:
            fids = list(map(bytes.decode, map(_id, found)))
            known = ids[count:count + len(fids)]
            lines.update(zip(known if known == fids else fids, whole, strict=True))
            keys.extend(_name_keys(list(map(_name, found))))
        except ValueError:  # bad UTF-8, an escape no JSON encoder writes: parse it all
            return None
        count += len(whole)
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
