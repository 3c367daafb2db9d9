"""Offline tools over the daemon's storage code: ``python -m flowd.offline <cmd>``.

Why a separate entry point: ``flowctl`` (package ``flowd_client``) must never
import the daemon, yet migrating a legacy file or checking a data dir without
a running daemon needs the daemon's own loader, journal reader and writer.
``flowctl`` runs this module as a subprocess and forwards its output and
exit code. Nothing here writes into a data dir a running daemon holds.

Commands:

- ``migrate SRC [DST|-]``: convert a legacy flows.json to schema 3.0
  (default DST: SRC itself, the original kept as ``SRC.backup-<UTC time>``).
- ``normalize FILE``: print the normalized 3.0 document on stdout.
- ``doctor DIR [--json]``: read-only checks of a data dir.

Exit codes: 0 ok, 1 failure (or a FAIL check), 2 usage.
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson
from flowd_client.discovery import LOCK_NAME, is_locked, read_lock_info

from .storage import journal as journal_mod
from .storage.evidence import keep_aside, list_evidence
from .storage.fsio import atomic_write
from .storage.lock import describe_holder
from .storage.migrate import CorruptFileError
from .storage.snapshot import SNAPSHOT, WRITTEN, View, encode

#: files at least this big get a progress bar while they load
PROGRESS_MIN_BYTES = 8 << 20
_CORE_META = ("last_saved", "file_revision", "revision")
_CORE_TOP = ("version", "meta", "current_flow_id", "flows")

#: (pattern over a migration note, what the summary counts it as)
NOTE_KINDS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"had (no|invalid) id"), "ids assigned"),
    (re.compile(r"^duplicate id "), "duplicate ids renamed"),
    (re.compile(r"had no name|: name "), "names set or fixed"),
    (re.compile(r"had no plans|: plans of type"), "plans set to []"),
    (re.compile(r"had no (created|updated)|: (created|updated) of type"), "timestamps set"),
    (re.compile(r"revision .* is not an integer|meta\.revision raised"), "revisions fixed"),
    (re.compile(r"current_flow collapsed"), "current_flow collapsed to current_flow_id"),
    (re.compile(r"names no flow|no current flow"), "current flow reset"),
    (re.compile(r"not an object|not objects"), "non-object entries kept aside"),
    (re.compile(r"id field .* key"), "ids taken from keys"),
]


class OfflineError(Exception):
    """A refusal or failure reported as one line, exit code 1."""


# ------------------------------------------------------------------ loading


def _load(path: Path, *, progress: bool = True) -> Any:
    """load_file with a tqdm bar on stderr for big files (the loader reports bytes read)."""
    from tqdm import tqdm

    from .storage.loader import load_file

    size = path.stat().st_size
    bar = tqdm(total=size, unit="B", unit_scale=True, desc=f"reading {path.name}",
               file=sys.stderr, disable=not progress or size < PROGRESS_MIN_BYTES, leave=False)

    def report(done: int) -> None:
        bar.update(max(0, min(done, size) - bar.n))

    try:
        return load_file(path, progress=report)
    except CorruptFileError as exc:
        raise OfflineError(f"{path} cannot be read as a flows file: {exc}") from None
    finally:
        bar.close()


def view_of(doc: dict[str, Any], *, bump: bool = True) -> View:
    """The snapshot writer's input for a normalized document (unknown keys kept)."""
    meta = doc.get("meta") or {}
    return View(items=list(doc["flows"].items()), current_flow_id=doc.get("current_flow_id"),
                revision=int(meta.get("revision", 0)),
                file_revision=int(meta.get("file_revision", 0)) + (1 if bump else 0),
                meta_extra={k: v for k, v in meta.items() if k not in _CORE_META},
                extra={k: v for k, v in doc.items() if k not in _CORE_TOP})


def summarize(notes: list[str]) -> list[str]:
    """Count the loader's notes by kind: a summary line per kind, most frequent first."""
    counts: dict[str, int] = {}
    for note in notes:
        if note.startswith(("migrated from", "... and ")):
            continue
        kind = next((k for pat, k in NOTE_KINDS if pat.search(note)), "other changes")
        counts[kind] = counts.get(kind, 0) + 1
    lines = [f"  {kind}: {n}" for kind, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    lines += [f"  (only the first changes are itemized: {n[4:]} not counted above)"
              for n in notes if n.startswith("... and ")]
    return lines


# ------------------------------------------------------------------ migrate


def _refuse_if_held(*paths: Path) -> None:
    for p in paths:
        d = p.resolve().parent
        if is_locked(d):
            raise OfflineError(f"a running flowd holds {d}; stop it first (flowd migrates its "
                               "own flows.json on start and keeps the original as a backup)")


def migrate(src: Path, dst: str | None, *, verbose: bool = False) -> int:
    """Write SRC as schema 3.0 to DST (never an existing file) or in place with a backup."""
    in_place = dst is None or (dst != "-" and Path(dst).resolve() == src.resolve())
    target = src if in_place else (None if dst == "-" else Path(dst))
    _refuse_if_held(*([src] if target is None else [src, target]))
    if target is not None and not in_place and os.path.lexists(target):
        raise OfflineError(f"{target} exists; refusing to overwrite it (pick a new name)")
    got = _load(src)
    out = sys.stderr if target is None else sys.stdout
    head = got.notes[0] if got.notes and got.notes[0].startswith("migrated from") else None
    print(head or f"{src} is already schema 3.0 ({len(got.doc['flows'])} flows)", file=out)
    for line in summarize(got.notes) + ([f"    {n}" for n in got.notes] if verbose else []):
        print(line, file=out)
    if target is None:
        return _emit(view_of(got.doc))
    if in_place and not got.migrated and not got.notes:
        print(f"nothing to change; {src} left as it was", file=out)
        return 0
    backup = keep_aside(src, "backup") if in_place else None
    st = atomic_write(target, encode(view_of(got.doc)))
    kept = f"; original kept as {backup}" if backup else f"; {src} left as it was"
    print(f"wrote {target} ({st.st_size} bytes, {len(got.doc['flows'])} flows){kept}", file=out)
    return 0


def normalize(path: Path) -> int:
    """Print the 3.0 form of any flows file (notes on stderr): for ``flowctl import``."""
    got = _load(path, progress=False)
    if got.notes:
        print(f"note: {path}: {got.notes[0]}", file=sys.stderr)
        print("\n".join(summarize(got.notes)), file=sys.stderr)
    return _emit(view_of(got.doc, bump=False))


def _emit(view: View) -> int:
    """Write a document to stdout in the snapshot format (chunked: big files stay cheap)."""
    for chunk in encode(view):
        sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()
    return 0


# ------------------------------------------------------------------ doctor


@dataclass
class Check:
    """One doctor finding: ``status`` is ok, warn or fail; ``hint`` says what to do."""

    name: str
    status: str
    message: str
    hint: str = ""
    details: list[str] = field(default_factory=list)


def check_dir(d: Path) -> Check:
    if not d.is_dir():
        what = "is not a directory" if d.exists() else "does not exist"
        return Check("data dir", "fail", f"{d} {what}",
                     "start flowd once (it creates the dir, mode 0700) or pass --data-dir")
    st = d.stat()
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        return Check("data dir", "warn", f"{d} is mode {mode:04o}: other users can read it",
                     f"chmod 700 {d}")
    if st.st_uid != os.getuid():
        return Check("data dir", "warn", f"{d} is owned by uid {st.st_uid}, not you",
                     "run flowd and flowctl as the owner of the data dir")
    return Check("data dir", "ok", f"{d} exists, mode 0700")


def check_lock(d: Path) -> Check:
    info = read_lock_info(d) or {}
    if is_locked(d):
        if not info:
            return Check("lock", "warn", "flowd.lock is held but names no endpoint yet",
                         "a daemon is starting; retry in a moment (`flowctl ping --wait 5`)")
        return Check("lock", "ok", f"held by {describe_holder(info)}")
    if info.get("pid"):
        return Check("lock", "warn", f"not held, but it still names pid {info['pid']}: "
                     "the last daemon did not exit cleanly",
                     "nothing is running here; starting flowd is safe (it recovers)")
    if not (d / LOCK_NAME).exists():
        return Check("lock", "ok", "no flowd.lock: no daemon has run here yet")
    return Check("lock", "ok", "not held: no daemon is running")


def check_snapshot(d: Path) -> Check:
    path = d / SNAPSHOT
    if not path.exists():
        return Check("flows.json", "ok", "absent: the store is empty or never saved")
    try:
        got = _load(path, progress=False)
    except (OfflineError, OSError) as exc:
        return Check("flows.json", "fail", str(exc),
                     "on start flowd keeps the bytes aside as flows.json.corrupt-<time> and "
                     "rebuilds from .flows.json.written or flows.json.prev plus the journal; "
                     "restore from a backup if those are gone")
    meta = got.doc.get("meta") or {}
    summary = (f"{len(got.doc['flows'])} flows, revision {meta.get('revision')}, "
               f"file_revision {meta.get('file_revision')}")
    if got.source_version != "3.0":
        return Check("flows.json", "warn",
                     f"schema {got.source_version or 'none'}, not 3.0 ({summary})",
                     "flowd migrates it on start (original kept as a backup), or run "
                     "`flowctl migrate` now", got.notes)
    written = d / WRITTEN
    if written.exists() and not _same_file(written, path):
        return Check("flows.json", "warn", f"schema 3.0 ({summary}) but rewritten by another "
                     "program since flowd last wrote it",
                     "flowd merges it three ways on start; stop old tools that write it")
    if got.notes:
        return Check("flows.json", "warn", f"schema 3.0 ({summary}) with repairs needed",
                     "flowd repairs these on load; see the details", got.notes)
    return Check("flows.json", "ok", f"schema 3.0, {summary}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def scan_segment(path: Path) -> tuple[int, int, str | None]:
    """(records, torn tail bytes, corruption) of one segment; reads, never moves anything."""
    data = path.read_bytes()
    head = journal_mod._frame_at(data, 0)
    if head is None or not isinstance(head[0], dict) or "base" not in head[0]:
        if len(data) < journal_mod.HEADER.size or journal_mod._is_torn(data, 0):
            return 0, len(data), None
        return 0, 0, "unreadable header"
    records, pos = 0, head[1]
    while pos < len(data):
        got = journal_mod._frame_at(data, pos)
        if got is None:
            if journal_mod._is_torn(data, pos):
                return records, len(data) - pos, None
            return records, 0, f"bad record at byte {pos} of {len(data)}"
        records, pos = records + 1, got[1]
    return records, 0, None


def check_journal(d: Path) -> Check:
    segs = sorted(p for p in d.iterdir() if journal_mod.SEGMENT_RE.match(p.name))
    if not segs:
        return Check("journal", "ok", "no segments: everything is in flows.json")
    total, torn, bad, size = 0, [], [], 0
    for p in segs:
        records, torn_bytes, corrupt = scan_segment(p)
        total, size = total + records, size + p.stat().st_size
        if corrupt:
            bad.append(f"{p.name}: {corrupt}")
        elif torn_bytes:
            torn.append(f"{p.name}: torn tail of {torn_bytes} bytes")
    msg = f"{len(segs)} segments, {total} records, {size} bytes"
    if bad:
        return Check("journal", "fail", f"{msg}; corrupt: {'; '.join(bad)}",
                     "flowd replays the records before the damage and keeps that segment and "
                     "later ones aside (journal-*.corrupt-*); changes after it may be lost: "
                     "compare with a backup", bad + torn)
    if torn:
        return Check("journal", "warn", f"{msg}; {len(torn)} torn tail(s)",
                     "a write was cut off before it was acknowledged; flowd drops it on "
                     "start, nothing to do", torn)
    return Check("journal", "ok", msg)


def check_evidence(d: Path) -> Check:
    files = list_evidence(d)
    if not files:
        return Check("evidence", "ok", "no files kept aside")
    details = [f"{p.name}  {p.stat().st_size} bytes" for p in files]
    return Check("evidence", "warn", f"{len(files)} file(s) kept aside "
                 f"({sum(p.stat().st_size for p in files)} bytes)",
                 "flowd never deletes these; inspect them (`less FILE`, "
                 "`python -m json.tool FILE`, `diff FILE flows.json`), merge by hand if "
                 "needed, then remove them yourself", details)


def check_sockets(d: Path) -> Check:
    info = read_lock_info(d) or {}
    if not is_locked(d) or not info:
        return Check("sockets", "ok", "no daemon running: nothing to check")
    eps = [ep for ep in (info.get("endpoint"), info.get("events")) if isinstance(ep, str)]
    problems = [p for ep in eps for p in _endpoint_problems(ep)]
    if problems:
        return Check("sockets", "fail", "; ".join(problems),
                     "restart flowd (it creates its sockets 0600 in a 0700 dir)")
    return Check("sockets", "ok", ", ".join(eps) + " private to you")


def _endpoint_problems(ep: str) -> list[str]:
    if ep.startswith("tcp://"):
        host = ep[6:].rsplit(":", 1)[0].strip("[]")
        ok = host in ("127.0.0.1", "localhost", "::1")
        return [] if ok else [f"{ep} is not loopback: other machines can connect"]
    if not ep.startswith("ipc://"):
        return []
    path = Path(ep[6:])
    try:
        st = path.stat()
    except OSError:
        return [f"{path} is advertised but missing"]
    mode = stat.S_IMODE(st.st_mode)
    out = [] if stat.S_ISSOCK(st.st_mode) else [f"{path} is not a socket"]
    if mode & 0o077:
        out.append(f"{path} is mode {mode:04o}, not 0600")
    return out


CHECKS: list[Callable[[Path], Check]] = [check_lock, check_snapshot, check_journal,
                                         check_evidence, check_sockets]


def doctor_checks(d: Path) -> list[Check]:
    """Every check in order; a missing dir stops after the first."""
    first = check_dir(d)
    if first.status == "fail":
        return [first]
    out = [first]
    for check in CHECKS:
        try:
            out.append(check(d))
        except OSError as exc:
            out.append(Check(check.__name__.removeprefix("check_"), "fail", str(exc),
                             "check the permissions of the data dir"))
    return out


def format_checks(checks: list[Check], stream: TextIO) -> None:
    for c in checks:
        print(f"{c.status if c.status != 'fail' else 'FAIL':<5} {c.name:<11} {c.message}",
              file=stream)
        for line in c.details[:20]:
            print(f"{'':18}{line}", file=stream)
        if c.hint and c.status != "ok":
            print(f"{'':18}-> {c.hint}", file=stream)


def doctor(d: Path, as_json: bool) -> int:
    checks = doctor_checks(d)
    if as_json:
        doc = {"data_dir": str(d), "checks": [asdict(c) for c in checks],
               "ok": all(c.status != "fail" for c in checks)}
        sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
        sys.stdout.buffer.flush()
    else:
        format_checks(checks, sys.stdout)
    return 1 if any(c.status == "fail" for c in checks) else 0


# ------------------------------------------------------------------ entry point


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flowd.offline",
                                description="offline tools over a flowd data dir")
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("migrate", help="convert a legacy flows.json to schema 3.0")
    m.add_argument("src", type=Path)
    m.add_argument("dst", nargs="?", help="new file, or - for stdout (default: in place, "
                   "original kept as SRC.backup-<UTC time>)")
    m.add_argument("-v", "--verbose", action="store_true", help="list every change")
    n = sub.add_parser("normalize", help="print a file of any version as 3.0 JSON")
    n.add_argument("file", type=Path)
    d = sub.add_parser("doctor", help="read-only checks of a data dir")
    d.add_argument("dir", type=Path)
    d.add_argument("--json", action="store_true")
    return p


def _run(args: argparse.Namespace) -> int:
    if args.cmd == "migrate":
        return migrate(args.src, args.dst, verbose=args.verbose)
    if args.cmd == "normalize":
        return normalize(args.file)
    return doctor(args.dir, args.json)


def main(argv: list[str] | None = None) -> int:
    """Run one command; errors become one line on stderr, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (OfflineError, OSError) as exc:
        print(f"flowd.offline: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
