"""Read flows.json, whatever its version, into a normalized schema-3.0 document.

Reading only: the caller decides what to do with a corrupt file (keep its
bytes aside) or a migrated one (keep a backup, write 3.0); nothing here
renames, writes or deletes.

Two ways in, one set of rules (:mod:`.migrate`):

* in memory: the whole file, ``orjson.loads``, then :func:`normalize`. The
  cyclic GC is paused meanwhile: parsing 100k flows allocates millions of
  containers, and with the GC on every allocation burst triggers collections
  that walk all of them (measured 1.7 s on, 0.46 s off).
* as a stream, for a legacy file bigger than ``stream_threshold``: pass 1
  walks the events to validate the JSON and collect the small top-level values
  (version, meta, current_flow, unknown keys), skipping over ``flows``; pass 2
  has ijson build the flows one by one (in C) and feeds each to a
  :class:`Migrator`. Peak memory is the result plus one flow, not the input
  bytes plus a parsed copy.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import ijson
import orjson
from flowd_client.gc_pause import gc_paused
from ijson.common import ObjectBuilder

from ..flow_lines import FlowTable
from .lines_file import read_own
from .lines_split import REGION, ExpectedIds
from .migrate import (
    VERSION,
    CorruptFileError,
    Migrator,
    check_flows_shape,
    json_kind,
    normalize,
)
from .ownfiles import open_own, open_regular

try:
    _IJSON: Any = ijson.get_backend("yajl2_c")
except ImportError:  # pragma: no cover - depends on the wheel
    _IJSON = ijson

DEFAULT_STREAM_THRESHOLD = 64 * 1024 * 1024
PEEK_BYTES = 64 * 1024
READ_CHUNK = 256 * 1024
_BOM = b"\xef\xbb\xbf"
_OPEN = frozenset(("start_map", "start_array"))
_CLOSE = frozenset(("end_map", "end_array"))
_PARSE_ERRORS = (ijson.JSONError, UnicodeDecodeError, ValueError)

Progress = Callable[[int], None]


@dataclass
class LoadResult:
    """A loaded flows.json: the normalized document and what it took to get it."""

    doc: dict[str, Any]
    #: True when the file was not a clean 3.0 document: it needs a rewrite
    migrated: bool
    #: the file's ``version`` (as a string), None when it had none
    source_version: str | None
    notes: list[str] = field(default_factory=list)
    size: int = 0
    seconds: float = 0.0
    #: read back by its lines (flowd's own file), not parsed
    by_lines: bool = False
    #: each flow's digest, when whoever parsed it took them (flowd.load_child)
    digests: dict[str, Any] | None = None


@contextmanager
def _parse_errors_as_corrupt(reader: _CountingReader | None = None) -> Iterator[None]:
    """ijson and orjson errors (syntax, truncation, bad UTF-8) become CorruptFileError.

    Only the first line of an ijson message is kept: the rest quotes the
    file's bytes (flow names) and points at a column of a chunk, not the file.
    """
    try:
        yield
    except _PARSE_ERRORS as exc:
        detail = exc.args[0] if exc.args else exc
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        detail = str(detail).strip().splitlines()[0] if str(detail).strip() else repr(exc)
        if reader is not None:
            detail += f" (within the first {reader.offset} bytes)"
        raise CorruptFileError(f"invalid JSON: {detail[:200]}") from exc


def _version_of(top: object) -> str | None:
    version = top.get("version") if type(top) is dict else None
    return version if version is None or type(version) is str else str(version)


def load_file(path: str | os.PathLike[str], *,
              stream_threshold: int = DEFAULT_STREAM_THRESHOLD,
              progress: Progress | None = None, owner: int | None = None,
              follow: bool = False, own: bool = False, ids: ExpectedIds = ()) -> LoadResult:
    """Load and normalize a flows.json; raise :class:`CorruptFileError` if unusable.

    ``progress(n)``, if given, is called with a growing byte count that ends
    at the file size (a streamed file is read twice: each pass is half).
    OSError (missing file, permissions) propagates unchanged: that is not a
    corrupt file. A file in a data dir must be its owner's (``owner``, default
    this process's uid) and is never read through a link (PlantedFileError);
    ``follow`` is for a file a user named (links followed, any owner). Either
    way a FIFO or device is refused, never read. ``own``: flowd wrote this file (it is
    the one it linked as written), so it is read back by its lines when it has
    flowd's layout (:mod:`.lines_file`), and parsed fully only if it has not; ``ids``
    are the ids it is expected to hold in order (see :func:`.lines_file.read_own`).
    """
    t0 = time.perf_counter()
    fd = open_regular(path) if follow else open_own(Path(path), owner=owner)
    with os.fdopen(fd, "rb") as f, gc_paused():
        size = os.fstat(f.fileno()).st_size
        skip = len(_BOM) if f.read(len(_BOM)) == _BOM else 0
        got = None
        if size > stream_threshold and not _peek_is_v3(f, skip):
            got = _load_stream(f, size, skip, progress)
        if got is None:
            got = _load_whole(f, skip, progress, own, ids)
        doc, notes, source, size = got
    if skip:
        notes.append("a UTF-8 byte order mark at the start of the file was dropped")
    migrated = source != VERSION or bool(notes)
    return LoadResult(doc, migrated, source, notes, size, time.perf_counter() - t0,
                      isinstance(doc["flows"], FlowTable))


_Loaded = tuple[dict[str, Any], list[str], str | None, int]


def _pieces(f: BinaryIO) -> list[bytes]:
    f.seek(0)
    return list(iter(partial(f.read, REGION), b""))


def _load_whole(f: BinaryIO, skip: int, progress: Progress | None,
                own: bool = False, ids: ExpectedIds = ()) -> _Loaded:
    """The whole file in memory: split by its lines if it is flowd's own, else orjson
    then normalize (GC paused by the caller). flowd's own is read in pieces, all of them
    first (the file is read as quickly as in one), which go as they are split."""
    f.seek(0)
    if own and not skip:
        pieces = _pieces(f)
        size = sum(map(len, pieces))
        if progress is not None and size:
            progress(size)
        if size and (doc := read_own(pieces, ids, partial(_pieces, f))) is not None:
            return doc, [], VERSION, size
        del pieces
        f.seek(0)  # not flowd's layout after all; what was split is gone: read it again
    data = f.read()
    size = len(data)
    if size == skip:
        raise CorruptFileError("empty file")
    if progress is not None:
        progress(size)
    with _parse_errors_as_corrupt():
        raw = orjson.loads(memoryview(data)[skip:] if skip else data)
    del data  # the bytes are not needed any more: free them before normalizing
    source = _version_of(raw)
    doc, notes = normalize(raw)
    return doc, notes, source, size


def _peek_is_v3(f: BinaryIO, skip: int) -> bool:
    """True if the first bytes show a top-level ``"version": "3.0"`` before ``flows``.

    A file where this cannot be seen is streamed: still correct (the stream
    path applies the same rules to a 3.0 file), just slower than orjson.
    """
    f.seek(skip)
    head = f.read(PEEK_BYTES)
    depth, key = 0, None
    try:
        for event, value in _IJSON.basic_parse(io.BytesIO(head)):
            if depth == 1 and key == "version":
                return event == "string" and value == VERSION
            if event == "map_key":
                if depth == 1:
                    if value == "flows":
                        return False
                    key = value
            elif event in _OPEN:
                depth += 1
            elif event in _CLOSE:
                depth -= 1
    except _PARSE_ERRORS:
        pass  # the head ends mid-document
    return False


class _CountingReader:
    """A read-only file view that reports progress: ``base + offset * scale``."""

    def __init__(self, f: BinaryIO, progress: Progress | None, base: int, scale: float) -> None:
        self._f, self._progress, self._base, self._scale = f, progress, base, scale
        self.offset = 0

    def read(self, n: int = -1) -> bytes:
        """What ijson calls: one chunk, then a progress report."""
        chunk = self._f.read(n)
        self.offset += len(chunk)
        if self._progress is not None and chunk:
            self._progress(self._base + int(self.offset * self._scale))
        return chunk




def _load_stream(f: BinaryIO, size: int, skip: int, progress: Progress | None) -> _Loaded | None:
    """Two passes over a big legacy file; None if it must be loaded whole instead."""
    f.seek(skip)
    reader = _CountingReader(f, progress, 0, 0.5)
    with _parse_errors_as_corrupt(reader):
        top, kind, top_list = _scan_top(
            _IJSON.basic_parse(reader, buf_size=READ_CHUNK, use_float=True))
    source = _version_of(top)
    check_flows_shape(kind, top.get("version") == VERSION)
    if kind == "list" and "flows.item" in top:
        return None  # a top-level key "flows.item" would look like a flow to ijson
    migrator = Migrator()
    if top_list or kind != "missing":
        top["flows"] = None  # present: finish() takes the flows from the migrator
    f.seek(skip)
    reader = _CountingReader(f, progress, size // 2, 0.5)
    with _parse_errors_as_corrupt(reader):
        if kind == "list":
            prefix = "item" if top_list else "flows.item"
            migrator.add_flows(_IJSON.items(reader, prefix, buf_size=READ_CHUNK, use_float=True))
        elif kind == "dict":
            migrator.add_items(_IJSON.kvitems(reader, "flows", buf_size=READ_CHUNK,
                                              use_float=True))
    if progress is not None:
        progress(size)
    doc, notes = migrator.finish(top)
    return doc, notes, source, size


def _scan_top(events: Iterator[tuple[str, Any]]) -> tuple[dict[str, Any], str, bool]:
    """Pass 1: the top-level values except ``flows``, the kind of ``flows``
    ("list", "dict", "missing" or a scalar type name), and whether the top
    level itself is the (legacy) flows list. Walks every event, so a syntax
    error anywhere in the file is raised here, before any flow is built.
    """
    first = next(events, None)
    if first is None:
        raise CorruptFileError("no JSON value in the file")
    event, value = first
    if event == "start_array":
        _skip(events)
        _expect_end(events)
        return {}, "list", True
    if event != "start_map":
        raise CorruptFileError(f"top level is {json_kind(value)}, expected an object")
    top: dict[str, Any] = {}
    kind = "missing"
    for event, value in events:
        if event == "end_map":
            break
        key = value
        event, value = next(events, ("", None))
        if not event:
            raise CorruptFileError("invalid JSON: the file ends after a key")
        if key != "flows":
            top[key] = _build(event, value, events)
            continue
        if kind != "missing":
            raise CorruptFileError("the top level has two 'flows' keys")
        kind = {"start_array": "list", "start_map": "dict"}.get(event, type(value).__name__)
        if event in _OPEN:
            _skip(events)
    _expect_end(events)
    return top, kind, False


def _skip(events: Iterator[tuple[str, Any]]) -> None:
    """Consume events up to the end of the container just opened."""
    depth = 1
    for event, _ in events:
        if event in _OPEN:
            depth += 1
        elif event in _CLOSE:
            depth -= 1
            if depth == 0:
                return
    raise CorruptFileError("invalid JSON: the file ends inside a value")


def _build(event: str, value: Any, events: Iterator[tuple[str, Any]]) -> Any:
    """The value that starts with this event (small top-level values only)."""
    if event not in _OPEN:
        return value
    builder = ObjectBuilder()
    builder.event(event, value)
    depth = 1
    for event, value in events:
        builder.event(event, value)
        if event in _OPEN:
            depth += 1
        elif event in _CLOSE:
            depth -= 1
            if depth == 0:
                return builder.value
    raise CorruptFileError("invalid JSON: the file ends inside a value")


def _expect_end(events: Iterator[tuple[str, Any]]) -> None:
    """Drain the parser: ijson raises on anything after the top-level value."""
    for _ in events:
        raise CorruptFileError("invalid JSON: data after the top-level value")
