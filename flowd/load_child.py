"""A big flows.json that must be parsed at start, parsed in a child process.

A file flowd did not write (an old tool's, an older flowd's, a legacy schema) is
parsed fully: every flow becomes Python dicts, lists and strings before it is
encoded into its line. The allocator keeps those pages once they are freed
(they are interleaved with the lines kept), so a daemon whose first start
parsed a million flows held 2.8 GiB until its next restart, not the 0.77 GiB
of the same store read back by its lines. A child
(``python -m flowd.load_child <file> <lifeline fd>``, spawned like a stray
merge's parse: :class:`flowd.stray_parse.ToolFileParse`) loads the file with the
daemon's own loader and hands back what the daemon keeps: each flow's line, its
digest (for the memory of written files) and the document around the flows.
Its memory goes with it.

Below :data:`CHILD_LOAD_BYTES` the file is parsed in process (a child costs more
than it saves). Whatever goes wrong in the child (it cannot start, exits
non-zero, writes what does not check out) the daemon parses in process, as
before: a failure costs time, never the load; a corrupt file is refused as the
loader refuses it.

``FLOWD_TEST_LOAD_CHILD_GATE`` (tests only) names a FIFO the child reads first;
``fail`` makes it exit.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import msgpack

from .flow_lines import FlowTable
from .memory_records import digest_value
from .storage.loader import LoadResult
from .storage.migrate import CorruptFileError
from .stray_parse import (
    FrameError,
    ToolFileParse,
    child_main,
    line_of,
    write_frames,
)

log = logging.getLogger("flowd")

#: files this big or bigger are parsed in a child (about 40k flows of ~435 bytes)
CHILD_LOAD_BYTES = 16 << 20
GATE_ENV = "FLOWD_TEST_LOAD_CHILD_GATE"
_INTS = frozenset((int,))


def load_in_child(path: Path, scratch: Path) -> LoadResult | None:
    """The loaded file, parsed by a child; None: small, or the child could not (the
    caller loads in process). CorruptFileError as the loader raises it."""
    try:
        if path.stat().st_size < CHILD_LOAD_BYTES:
            return None
    except OSError:
        return None  # the loader says what is wrong with it
    t0, done = time.perf_counter(), threading.Event()
    try:
        parse = ToolFileParse(path, scratch, done.set, module=__name__)
    except OSError as exc:
        log.warning("could not start parsing %s in a child process (%s); parsing it in "
                    "the daemon", path.name, exc)
        return None
    try:
        done.wait()
        why = parse.failure()
        if why is None:
            try:
                got = read_loaded(iter(parse.frames()))
            except (FrameError, ValueError, TypeError, StopIteration) as exc:
                why = f"its output could not be read: {exc!r}"
            else:
                log.info("parsed %s (%.0f MiB, %d flows) in a child process in %.2f s",
                         path.name, got.size / 2**20, len(got.doc["flows"]),
                         time.perf_counter() - t0)
                return got
        log.warning("could not parse %s in a child process (%s); parsing it in the daemon",
                    path.name, why)
        return None
    finally:
        parse.close()


def read_loaded(frames: Any) -> LoadResult:
    """The child's output, checked: a header, then ``[ids, lines, digests]`` frames."""
    head = next(frames)
    if type(head) is not dict or head.get("v") != 1:
        raise FrameError("no header")
    if "corrupt" in head:
        raise CorruptFileError(str(head["corrupt"]))
    doc, count, info = head.get("doc"), head.get("count"), head.get("load")
    if type(doc) is not dict or type(doc.get("meta")) is not dict or type(count) is not int \
            or type(info) is not dict:
        raise FrameError("bad header")
    migrated, source, notes, size = (info.get(k) for k in ("migrated", "source", "notes", "size"))
    if type(migrated) is not bool or not (source is None or type(source) is str) \
            or type(notes) is not list or not all(type(n) is str for n in notes) \
            or type(size) is not int:
        raise FrameError("bad header")
    lines: dict[str, bytes] = {}
    digests: dict[str, Any] = {}
    taken = 0
    for frame in frames:
        ids, flines, digs = _triple(frame)
        taken += len(ids)
        lines.update(zip(ids, flines, strict=True))
        digests.update(zip(ids, digs if set(map(type, digs)) <= _INTS
                           else map(digest_value, digs), strict=True))
    if not taken == len(lines) == count:  # an id twice is no output of the child's
        raise FrameError(f"{taken} flows ({len(lines)} ids) of {count}")
    doc["flows"] = FlowTable(lines)
    return LoadResult(doc, migrated, source, notes, size, by_lines=False, digests=digests)


def _triple(frame: Any) -> tuple[list[str], list[bytes], list[Any]]:
    if type(frame) is not list or len(frame) != 3:
        raise FrameError("bad frame")
    ids, lines, digs = frame
    if type(ids) is not list or type(lines) is not list or type(digs) is not list \
            or not len(ids) == len(lines) == len(digs) \
            or not all(type(i) is str for i in ids) or not all(type(x) is bytes for x in lines):
        raise FrameError("bad frame")
    return ids, lines, digs


# ------------------------------------------------------------ the child


def write_loaded(out: IO[bytes], got: LoadResult) -> None:
    """The header (the document without its flows, how it was loaded), then each flow's
    line and digest, in frames of about ``stray_parse.FRAME_BYTES`` of lines."""
    from .digests import digest

    flows = got.doc.pop("flows")
    out.write(msgpack.packb({"v": 1, "count": len(flows), "doc": got.doc,
                             "load": {"migrated": got.migrated, "source": got.source_version,
                                      "notes": got.notes, "size": got.size}}))
    write_frames(out, ((fid, line_of(fid, flow), _plain(digest(flow)))
                       for fid, flow in flows.items()), 3)


def _plain(d: Any) -> Any:
    return list(d) if type(d) is tuple else d


def main(argv: list[str]) -> int:
    """Load the file ``argv[1]`` names; the result goes to stdout (see the module)."""
    return child_main(argv, GATE_ENV, write_loaded)


if __name__ == "__main__":  # pragma: no cover - run as the child
    sys.exit(main(sys.argv))
