"""flowd's own flows.json: the top levels indented, one flow per line, and a check.

Written by joining the store's lines in chunks (nothing is encoded at
snapshot time), read back by splitting lines (nothing is parsed but the few
top-level values): a million flows load in the time it takes to split and
index them. The loader reads the file in pieces, each dropped once split, so
the start holds the file's bytes and the store's lines at once only piece by
piece. The file stays schema 3.0, valid JSON the old tools load and write.

The lines are checked and split by :mod:`.lines_split` (for a big file in two
processes); a line's layout is proven there, its content only by the CRC.

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
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from ..flow_lines import CHECK_KEY, FlowTable
from .checksum import crc32
from .lines_split import AGAIN, ExpectedIds, split_body
from .migrate import VERSION, CorruptFileError

if TYPE_CHECKING:
    from .snapshot import View

#: lines joined at a time (each join holds the GIL): ~1 MB of a typical store. At 1M
#: flows, 8192 held it 1.5 ms a join (3.0 at most), 2048 0.32 (1.05): a write that comes
#: during a join waits a fifth as long; the snapshot's CPU did not change measurably
CHUNK = 2048
OPT = orjson.OPT_INDENT_2
_FLOWS = b',\n  "flows": {'
_END = b"\n  }"
_CHECK = b'"meta": {\n    "%s": "' % CHECK_KEY.encode()
_PLACEHOLDER = b"00000000"


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
            crc = crc32(body, crc)  # releases the GIL over a big buffer
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


def read_own(data: bytes | list[bytes], ids: ExpectedIds = (),
             reread: Callable[[], list[bytes]] | None = None) -> dict[str, Any] | None:
    """The document (flows as a FlowTable of lines) of a file in flowd's layout; None
    if it is not one (the caller parses it fully); CorruptFileError if it fails its
    check. ``data``: the file, or its pieces in order, which are dropped from the list
    as they are split (the file's bytes go while its lines come: the start's peak is
    the store's, not the store's plus the file's). ``ids``: the ids this file is
    expected to hold, in order (the memory of written files has them), or what gives
    them when called (:data:`.lines_split.ExpectedIds`): where they match, the table is
    keyed by those very strings, so that a million ids are held once, not twice.
    ``reread``: the pieces again; given with ``ids`` for a body of
    :data:`.lines_split.FORK_FROM` bytes or more, a forked child checks the lines while
    this process splits them (two cores: the check and the split each take half the
    start), and should the child not finish, or find other ids, all is done again here."""
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
    table, check = split_body(pieces, start, end, ids, fork=reread is not None)
    if table is AGAIN and reread is not None:  # the child could not say: all here
        return read_own(reread(), ids)
    if not isinstance(table, FlowTable):  # another layout (a tool's dump of flowd's
        return None  # document): parse it
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
