"""The body of flowd's own flows.json cut into the store's lines: checked, split,
and its CRC computed, in one process or, for a big file, in two.

Checking the lines (a regex over every byte, the names hashed) and splitting
them (a bytes object each, the table built) take about the same time and both
hold the GIL: for a big file a forked child checks while the daemon splits
(:mod:`.forked_records`), and nothing split is kept unless the child found
every region in flowd's layout. The check proves that every byte of the body
is in one line that opens with its id and closes with a brace; whether a line
holds one JSON member, not two, only the file's CRC can tell (no check short
of parsing tells a member's end from a nested object's), so the CRC is what
guards against damage, and it is no guard against someone who can write the
data dir and recompute it. The body comes in pieces, each dropped once split.
"""

from __future__ import annotations

import itertools
import logging
import operator
import queue
import re
import threading
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial

import orjson

from ..child_gate import gate
from ..flow_lines import FlowTable, name_key, raw_name_keys
from ..heap import release_free_memory
from .checksum import crc32
from .forked_records import ForkedRecords, Record

log = logging.getLogger("flowd")

#: a line flowd writes (after its "\n"): its id (unescaped), its name (maybe escaped),
#: and the rest to the closing brace just before the separator or the region's end.
#: Nothing is captured but the two: the check copies no line (the split does)
_LINE = re.compile(rb'\n    "([^"\\\n]*)": \{"id":"[^"\\\n]*",'
                   rb'"name":"([^"\\\n]*(?:\\.[^"\\\n]*)*)"[^\n]*\}(?=,\n|\Z)')
_id, _name = operator.itemgetter(0), operator.itemgetter(1)
#: the lines' separator, split at by a regex: the same parts as ``bytes.split``, but the
#: regex finds the comma with ``memchr`` where ``bytes.split`` runs its general two-byte
#: search (4 against 5.7 ms a 4 MiB region; 0.66 against 0.82 s of a million flows)
_split_lines = re.compile(rb",\n").split
#: bytes of the file split at a time: a region's matches (a tuple and two bytes per
#: line) are freed in pools of their own between the lines kept, and pymalloc keeps
#: those pools; small regions reuse the same few (32 MiB regions left 18 MiB unused)
REGION = 4 << 20
#: pieces of a file read in pieces between two ``malloc_trim``: glibc keeps the pages
#: of those freed (the lines kept are not allocated from them), so the start's peak
#: would still be the store's plus the file's
TRIM_EVERY = 16
#: bodies this big or bigger are checked by a forked child (:func:`_split_beside`);
#: below, a fork (a few ms) is more than it saves
FORK_FROM = 16 << 20
#: (tests only) names a FIFO the checking child reads first ("fail": it exits)
CHECK_GATE_ENV = "FLOWD_TEST_CHECK_CHILD_GATE"
#: a child's verdicts on a region: not flowd's layout; other ids than those expected
_NOT_OURS, _OTHER_IDS = -1, -2
#: the child could not say (it died, or other ids): split it all in this process
AGAIN = object()


#: the ids a file is expected to hold, in order, or what gives them when called: the
#: daemon's memory of written files, whose load (0.28 s at a million flows) then runs
#: while the forked child checks the lines, not before the child starts
ExpectedIds = Sequence[str] | Callable[[], Sequence[str]]


def split_body(pieces: list[bytes], start: int, end: int, ids: ExpectedIds,
               fork: bool) -> tuple[FlowTable | None | object, int]:
    """The table of the body, bytes ``start`` to ``end`` of the pieces joined (None:
    not flowd's layout; :data:`AGAIN`: a child could not tell, split it all again in
    process), and the body's CRC-32. ``fork``: the caller can read the file again, so
    from :data:`FORK_FROM` bytes on (with ``ids``) a forked child checks the lines
    while this process splits them; ``ids`` given as a callable is called once the
    child is checking (none back: the child is stopped, all of it here)."""
    regions = _regions(pieces, start, end)
    beside = None
    if fork and (callable(ids) or ids) and end - start >= FORK_FROM:
        try:
            beside = ForkedRecords(partial(_verdicts, regions))  # the check, in a child
        except OSError as exc:  # no process or descriptor to spare: all of it here
            log.warning("could not fork a child to check flows.json's lines (%s): "
                        "checking them in the daemon", exc)
    crc = _Crc()  # the CRC on a thread while this one splits
    try:
        expected = ids() if callable(ids) else ids
        if beside is not None and not expected:  # nothing to key the split by: all here
            beside.close()
            beside = None
        table = _split(regions, expected, crc) if beside is None else _split_beside(
            regions, expected, crc, beside)
    finally:
        check = crc.result()
        if beside is not None:
            beside.close()
    return table, check


class _Crc(threading.Thread):
    """The CRC-32 of the buffers put in it, in order, computed in a thread (0.05 s of
    a million flows' start; 0.2 s with zlib's CRC)."""

    def __init__(self) -> None:
        super().__init__(name="flowd-load-crc", daemon=True)
        self.crc = 0
        self.buffers: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
        self.start()

    def run(self) -> None:
        crc, buffers = 0, self.buffers
        while (data := buffers.get()) is not None:
            crc = crc32(data, crc)
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


def _check(data: bytes, start: int, stop: int, ids: Sequence[str],
           count: int) -> tuple[int, list[str] | None, list[int]] | None:
    """A region's lines checked (:func:`_scan`): how many, their ids (None: ``ids[count:]``
    holds them, in order) and their names' keys; None if not flowd's layout."""
    scanned = _scan(data, start, stop)
    if scanned is None:
        return None
    raw, joined, keys = scanned
    fids = None if joined == _joined(ids[count:count + len(raw)], len(raw)) else list(
        map(bytes.decode, raw))
    return len(raw), fids, keys


def _scan(data: bytes, start: int, stop: int) -> tuple[list[bytes], bytes, list[int]] | None:
    """A region's lines checked, in C (one regex pass; a Python loop over a million
    lines costs seconds): their ids, those joined by "\n", and their names' keys; None if
    a line is not in flowd's layout or not text an encoder writes (an escaped id, a key
    order flowd never writes, bad UTF-8, an escape JSON does not know: the full parser
    decides). The region, bytes ``start`` to ``stop``, is lines each after a "\n" and
    all but the last before a comma. Every match begins at a "\n" and holds no other,
    and ends at a brace just before the next ",\n" or the end: as many matches as "\n"
    means every byte is in a line."""
    found = _LINE.findall(data, start, stop)
    if not data.startswith(b"\n", start) or len(found) != data.count(b"\n", start, stop):
        return None
    raw = list(map(_id, found))
    joined = b"\n".join(raw)
    try:
        joined.decode()
        keys = _name_keys(list(map(_name, found)))
    except ValueError:
        return None
    return raw, joined, keys


def _joined(known: Sequence[str], count: int) -> bytes | None:
    """The ids known joined by "\n", as the file would hold them, to compare in C with
    the ``count`` found joined (decoding each found was 0.17 s of a million flows' check,
    this 0.06); None if they are not ``count`` or one is no text (never found). No id
    found holds a "\n", so joined they are equal only id by id."""
    try:
        return "\n".join(known).encode() if len(known) == count else None
    except UnicodeEncodeError:
        return None


def _split(regions: Iterable[Region], ids: Sequence[str],
           crc: _Crc) -> FlowTable | None:
    """The lines, their ids and names: each region checked, then split (regions bound
    the temporaries: RSS stays what is kept). Each region goes to the CRC as it is
    split."""
    lines: dict[str, bytes] = {}
    keys = array("I")  # 4 bytes a flow (a list: 8, and an int object of 32)
    count = 0
    for data, start, cut, last in regions:
        crc.buffers.put(memoryview(data)[start:cut])
        stop = cut - (not last)  # the last line's comma: the next region's separator
        checked = _check(data, start, stop, ids, count)
        if checked is None:
            return None
        n, fids, names = checked
        got = _lines(data, start, stop)
        if len(got) != n:  # never (the check counts every line): the parser decides
            return None
        lines.update(zip(ids[count:count + n] if fids is None else fids, got, strict=True))
        keys.extend(names)
        count += n
    return _table(lines, count, keys)


def _lines(data: bytes, start: int, stop: int) -> list[bytes]:
    """The lines of a region: bytes ``start`` + 1 to ``stop`` split at ",\n". A region
    that is all of its piece's lines (the loader's pieces: each but the first and last)
    is split in place, the piece's first and last parts (halves of the lines across
    its seams) dropped: copying each region out first cost 0.14 s of a million flows'
    start (fresh pages for every copy)."""
    # the separators before and after, and no other outside: the piece's parts between
    # those two are exactly the region's lines
    if (start >= 1 and data.startswith(b",\n", start - 1) and data.startswith(b",\n", stop)
            and data.rfind(b",\n", 0, start - 1) < 0 and data.find(b",\n", stop + 2) < 0):
        parts = _split_lines(data)
        del parts[0], parts[-1]
        return parts
    return _split_lines(data[start + 1:stop])


def _table(lines: dict[str, bytes], count: int, keys: array[int]) -> FlowTable | None:
    if len(lines) != count:
        return None  # a repeated id: the full parser says what happens to it
    table = FlowTable(lines)
    table.name_keys = keys
    return table


def _verdicts(regions: Iterable[Region]) -> Iterator[Record]:
    """The child's share of :func:`_split_beside`: each region's check, as a record (its
    count, then its ids joined by "\n" and its names' keys; or why the parent must not
    keep its split). The parent compares those ids with the ones it keyed its lines by,
    which it may load only once this child runs (see :data:`ExpectedIds`)."""
    gate(CHECK_GATE_ENV)
    for data, start, cut, last in regions:
        scanned = _scan(data, start, cut - (not last))
        if scanned is None:
            yield _NOT_OURS, b""
            return
        raw, joined, keys = scanned
        yield len(raw), joined + array("I", keys).tobytes()


class _Verdicts:
    """The child's records, taken in order as they come: each region's ids compared with
    those this process keyed its lines by, its names' keys kept, or why the split must
    not be kept (:data:`_NOT_OURS`, :data:`_OTHER_IDS`: ``refused``)."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.ids, self.count = ids, 0
        self.counts: list[int] = []
        self.keys = array("I")
        self.refused: int | None = None

    def take(self, records: Iterable[Record]) -> bool:
        """False once a record refuses the split."""
        for n, payload in records:
            if self.refused is not None:
                break
            if n < 0:
                self.refused = _NOT_OURS
                break
            want = _joined(self.ids[self.count:self.count + n], n)
            if want is None or len(payload) != len(want) + 4 * n or not payload.startswith(want):
                self.refused = _OTHER_IDS
                break
            self.keys.frombytes(memoryview(payload)[len(want):])
            self.counts.append(n)
            self.count += n
        return self.refused is None


def _split_beside(regions: Iterable[Region], ids: Sequence[str], crc: _Crc,
                  beside: ForkedRecords) -> FlowTable | None | object:
    """:func:`_split` with the check done by a child (:func:`_verdicts`) while this
    process splits, each region's lines keyed by the ids expected. Kept only if the
    child finds each region in flowd's layout with those very ids and as many lines as
    split here; :data:`AGAIN` if it could not tell (the caller splits all itself)."""
    lines: dict[str, bytes] = {}
    counts: list[int] = []
    verdicts = _Verdicts(ids)
    count = 0
    for data, start, cut, last in regions:
        crc.buffers.put(memoryview(data)[start:cut])
        got = _lines(data, start, cut - (not last))
        # fewer ids than lines: the child finds other ids than those expected
        lines.update(zip(ids[count:count + len(got)], got, strict=False))
        count += len(got)
        counts.append(len(got))
        if not verdicts.take(beside.drain()):
            break  # what this process split is not kept: stop early
    # refused already: whatever the rest of the child's verdicts (other ids: all of it
    # is done again here)
    rest = [] if verdicts.refused is not None else beside.finish()
    if rest is not None:
        verdicts.take(rest)
    if verdicts.refused == _NOT_OURS:
        return None
    if verdicts.refused == _OTHER_IDS:
        log.info("flows.json holds other ids than the memory of written files has for "
                 "it: its lines are split again, keyed by their own")
        return AGAIN
    if rest is None:
        log.warning("the child checking flows.json's lines did not finish: checking "
                    "them in the daemon")
        return AGAIN
    if verdicts.counts != counts:  # never (the check counts every line): all of it here
        log.warning("the child counted other lines in flows.json than the daemon "
                    "split: checking them in the daemon")
        return AGAIN
    return _table(lines, count, verdicts.keys)


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
