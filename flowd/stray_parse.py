"""An old tool's flows.json, parsed in a child process while the daemon serves.

Parsing, checking and normalizing a tool's file is most of a stray merge (at a
million flows, 12-14 s of the 21-27 s the loop was stalled) and needs nothing of
the live store. So a child (``python -m flowd.stray_parse <held file> <lifeline fd>``) loads
the file with the daemon's own loader and writes each flow as the line flowd
would store for it, without ``revision``, into an unnamed file in memory (memfd);
the loop reads those lines back a frame at a time (:mod:`flowd.stray_intake`)
and compares them with its own as bytes. The child writes nothing in the data
dir: it reads the held file, and what it writes has no name.

The output is msgpack: a header map, then ``[ids, lines]`` frames of about
:data:`FRAME_BYTES`. A header with ``corrupt`` says the file is unusable (the
loader's message). Any other failure (the child could not start, died, or met a
flow it cannot encode) is an exit status: the daemon then parses in process, as
before, so a failure here costs time and never a merge.

``FLOWD_TEST_STRAY_PARSE_GATE`` (tests only) names a FIFO the child reads before
it starts: a test holds the parse open for as long as it needs, or makes the
child fail by writing ``fail``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import msgpack

from . import flow_lines
from .child_gate import gate

FRAME_BYTES = 1 << 20
#: the child met a flow it cannot write as a line (a value orjson cannot encode)
EXIT_UNENCODABLE = 4
#: the daemon went away (or dropped the parse) before the child was done
EXIT_ORPHANED = 71
GATE_ENV = "FLOWD_TEST_STRAY_PARSE_GATE"
ERR_TAIL = 400
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


class FrameError(ValueError):
    """The child's output is not what it writes: the caller parses in process."""


class ToolFileParse:
    """One child parsing one held file; ``on_exit`` is called (from a waiter thread)
    when it has exited, so the loop wakes for it instead of polling."""

    def __init__(self, held: Path, scratch: Path, on_exit: Callable[[], None],
                 module: str = "flowd.stray_parse") -> None:
        self.out, self.err = _unnamed(scratch, "lines"), _unnamed(scratch, "errors")
        env = {k: v for k, v in os.environ.items()  # systemd's are the daemon's alone
               if k not in ("NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC")}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH"))
                                            if p)
        # the child reads the other end: end of file means the daemon is gone (or done
        # with it), and it exits instead of parsing a million flows for nobody
        self._lifeline, lifeline = -1, -1
        try:
            lifeline, self._lifeline = os.pipe()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module, str(held), str(lifeline)],
                stdin=subprocess.DEVNULL, stdout=self.out, stderr=self.err, env=env,
                pass_fds=(lifeline,))
        except BaseException:
            self._close_files()
            raise
        finally:
            if lifeline >= 0:
                os.close(lifeline)
        self._waiter = threading.Thread(target=self._wait, args=(on_exit,),
                                        name="stray-parse", daemon=True)
        self._waiter.start()

    def _wait(self, on_exit: Callable[[], None]) -> None:
        self.proc.wait()
        on_exit()

    @property
    def exited(self) -> bool:
        return self.proc.returncode is not None

    def failure(self) -> str | None:
        """Why the child's output cannot be used (None: it can)."""
        code = self.proc.returncode
        if code == 0:
            return None
        if code == EXIT_UNENCODABLE:
            return "it holds a value flowd cannot write as a line"
        self.err.seek(0, os.SEEK_END)
        size = self.err.tell()
        self.err.seek(max(0, size - ERR_TAIL))
        tail = self.err.read().decode("utf-8", "replace").strip().splitlines()
        return f"the parsing process exited with status {code}" + (
            f" ({tail[-1][:200]})" if tail else "")

    def frames(self) -> Iterator[Any]:
        """The child's output, one msgpack object at a time."""
        self.out.seek(0, os.SEEK_END)
        size = self.out.tell()
        self.out.seek(0)
        return iter(msgpack.Unpacker(self.out, raw=False, read_size=FRAME_BYTES,
                                     max_buffer_size=max(size, FRAME_BYTES)))

    def close(self) -> None:
        """Stop the child if it still runs; drop its output (in a thread: the kernel
        frees an unnamed file's blocks in close, 0.25 s for 400 MB at 1M flows)."""
        if self.proc.returncode is None:
            self.proc.kill()
            self._waiter.join(timeout=10)
        threading.Thread(target=self._close_files, name="stray-parse-close",
                         daemon=True).start()

    def _close_files(self) -> None:
        self.out.close()
        self.err.close()
        if self._lifeline >= 0:
            os.close(self._lifeline)
            self._lifeline = -1


def _unnamed(scratch: Path, what: str) -> IO[bytes]:
    """A file with no name, in memory where the system allows: the lines of a million
    flows written to a disk file would queue the journal's fsyncs behind their
    writeback; and nothing is left behind by a kill -9 either way."""
    try:
        return os.fdopen(os.memfd_create(f"flowd-stray-{what}", os.MFD_CLOEXEC), "w+b")
    except (AttributeError, OSError):  # pragma: no cover - Linux has memfd since 3.17
        return tempfile.TemporaryFile(dir=scratch)  # O_TMPFILE, or unlinked at once


def header_of(frame: Any) -> dict[str, Any]:
    """The first frame, checked: what the child says about the file."""
    if type(frame) is not dict or frame.get("v") != 1:
        raise FrameError("no header")
    if "corrupt" in frame:
        if type(frame["corrupt"]) is not str:
            raise FrameError("bad corrupt message")
        return frame
    count, cur, number = frame.get("count"), frame.get("current_flow_id"), frame.get(
        "file_revision")
    if type(count) is not int or count < 0 or not (cur is None or type(cur) is str) \
            or not (number is None or type(number) is int):
        raise FrameError("bad header")
    return frame


def pairs_of(frame: Any) -> tuple[list[str], list[bytes]]:
    """A ``[ids, lines]`` frame, checked."""
    if type(frame) is not list or len(frame) != 2:
        raise FrameError("bad frame")
    ids, lines = frame
    if type(ids) is not list or type(lines) is not list or len(ids) != len(lines) \
            or not all(type(i) is str for i in ids) or not all(type(x) is bytes for x in lines):
        raise FrameError("bad frame")
    return ids, lines


# ------------------------------------------------------------ the child


def watch_parent(fd: int) -> None:
    """Exit as soon as the daemon's end of the lifeline closes."""
    def watch() -> None:
        while os.read(fd, 1):
            pass
        os._exit(EXIT_ORPHANED)
    threading.Thread(target=watch, name="lifeline", daemon=True).start()


def line_of(fid: str, flow: dict[str, Any]) -> bytes:
    """The flow's line as the daemon would store it; a value it cannot write as one ends
    the child (the daemon then parses in process)."""
    try:
        return flow_lines.encode(fid, flow)
    except TypeError:
        raise SystemExit(EXIT_UNENCODABLE) from None


def write_frames(out: IO[bytes], rows: Iterable[tuple[Any, ...]], width: int) -> None:
    """Rows ``(id, line, ...)`` as frames of ``width`` columns, about :data:`FRAME_BYTES`
    of lines each."""
    columns: list[list[Any]] = [[] for _ in range(width)]
    size = 0
    for row in rows:
        for column, value in zip(columns, row, strict=True):
            column.append(value)
        size += len(row[1])
        if size >= FRAME_BYTES:
            out.write(msgpack.packb(columns))
            columns, size = [[] for _ in range(width)], 0
    if columns[0]:
        out.write(msgpack.packb(columns))


def write_lines(out: IO[bytes], doc: dict[str, Any]) -> None:
    """The header and the ``[ids, lines]`` frames of a loaded document (its flows lose
    ``revision``: the loader's default, the tool never wrote one)."""
    number, cur = (doc.get("meta") or {}).get("file_revision"), doc.get("current_flow_id")
    out.write(msgpack.packb({"v": 1, "count": len(doc["flows"]),
                             "current_flow_id": cur if type(cur) is str else None,
                             "file_revision": number if type(number) is int else None}))
    write_frames(out, _without_revision(doc["flows"]), 2)


def _without_revision(flows: dict[str, dict[str, Any]]) -> Iterator[tuple[str, bytes]]:
    for fid, flow in flows.items():
        flow.pop("revision", None)
        yield fid, line_of(fid, flow)


def child_main(argv: list[str], gate_env: str, write: Callable[[IO[bytes], Any], None]) -> int:
    """A parsing child: load the file ``argv[1]`` names with the daemon's loader and
    ``write`` what it found to stdout (or a ``corrupt`` header); exit when the lifeline
    ``argv[2]`` closes."""
    from .storage.loader import load_file
    from .storage.migrate import CorruptFileError

    watch_parent(int(argv[2]))
    gate(gate_env)
    out = sys.stdout.buffer
    try:
        got = load_file(argv[1])
    except CorruptFileError as exc:
        out.write(msgpack.packb({"v": 1, "corrupt": str(exc)}))
    else:
        write(out, got)
    out.flush()
    return 0


def main(argv: list[str]) -> int:
    """Parse the file ``argv[1]`` names; the lines go to stdout (see the module)."""
    return child_main(argv, GATE_ENV, lambda out, got: write_lines(out, got.doc))


if __name__ == "__main__":  # pragma: no cover - run as the child
    sys.exit(main(sys.argv))
