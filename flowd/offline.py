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
- ``doctor DIR [--json]``: read-only checks of a data dir, as one JSON document
  (``flowctl doctor`` prints it for people).

The doctor checks live in :mod:`flowd.doctor`, the loading both share in
:mod:`flowd.offline_load`.

Exit codes: the shared table (:mod:`flowd_client.exitcodes`): 1 failure (or a
FAIL check), 2 usage, 3 when a running daemon holds the dir. ``--prog NAME``
names the messages' prefix, so that ``flowctl`` (which runs this) reports a
failure as one line of its own.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

import orjson
from flowd_client.discovery import is_locked
from flowd_client.exitcodes import BUSY, FAILED, INTERRUPTED

from . import doctor, flow_lines
from .flow_lines import FlowTable
from .offline_load import OfflineError, load_flows
from .storage.evidence import keep_aside
from .storage.fsio import atomic_write
from .storage.snapshot import View, encode

_CORE_META = flow_lines.FILE_META
#: the prefix of messages on stderr (``--prog``)
PROG = ["flowd.offline"]
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


# ------------------------------------------------------------------ documents, summaries


def view_of(doc: dict[str, Any], *, bump: bool = True) -> View:
    """The snapshot writer's input for a normalized document (unknown keys kept)."""
    meta = doc.get("meta") or {}
    flows = doc["flows"]
    lines = flows.lines if isinstance(flows, FlowTable) else {
        fid: flow_lines.encode(fid, flow) for fid, flow in flows.items()}
    return View(lines=lines, current_flow_id=doc.get("current_flow_id"),
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
                               "own flows.json on start and keeps the original as a backup)",
                               BUSY)


def migrate(src: Path, dst: str | None, *, verbose: bool = False) -> int:
    """Write SRC as schema 3.0 to DST (never an existing file) or in place with a backup."""
    in_place = dst is None or (dst != "-" and Path(dst).resolve() == src.resolve())
    target = src if in_place or dst is None else (None if dst == "-" else Path(dst))
    _refuse_if_held(*([src] if target is None else [src, target]))
    if target is not None and not in_place and os.path.lexists(target):
        raise OfflineError(f"{target} exists; refusing to overwrite it (pick a new name)")
    got = load_flows(src)
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
    enc = encode(view_of(got.doc))
    st = atomic_write(target, enc, patch=enc.patch)
    kept = f"; original kept as {backup}" if backup else f"; {src} left as it was"
    print(f"wrote {target} ({st.st_size} bytes, {len(got.doc['flows'])} flows){kept}", file=out)
    return 0


def normalize(path: Path) -> int:
    """Print the 3.0 form of any flows file (notes on stderr): for ``flowctl import``."""
    got = load_flows(path, progress=False)
    if got.notes:
        print(f"{PROG[0]}: note: {path}: {got.notes[0]}", file=sys.stderr)
        print("\n".join(summarize(got.notes)), file=sys.stderr)
    return _emit(view_of(got.doc, bump=False))


def _emit(view: View) -> int:
    """Write a document to stdout in the snapshot format, its check patched in (so it
    is built in memory first: a CLI's one-off cost, never the daemon's)."""
    sys.stdout.buffer.write(encode(view).whole())
    sys.stdout.buffer.flush()
    return 0


# ------------------------------------------------------------------ entry point


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flowd.offline",
                                description="offline tools over a flowd data dir")
    p.add_argument("--prog", default="flowd.offline", help="prefix of the messages")
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
    d.add_argument("--json", action="store_true",
                   help="the output is always one JSON document (flowctl doctor prints it)")
    return p


def _run(args: argparse.Namespace) -> int:
    if args.cmd == "migrate":
        return migrate(args.src, args.dst, verbose=args.verbose)
    if args.cmd == "normalize":
        return normalize(args.file)
    return _doctor(args.dir)


def _doctor(d: Path) -> int:
    """The checks' document on stdout; 1 if any failed."""
    out = doctor.report(d)
    sys.stdout.buffer.write(orjson.dumps(out, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.buffer.flush()
    return 0 if out["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    """Run one command; errors become one line on stderr, never a traceback."""
    args = build_parser().parse_args(argv)
    PROG[0] = args.prog
    try:
        return _run(args)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return FAILED
    except OfflineError as exc:
        print(f"{args.prog}: {exc}", file=sys.stderr)
        return exc.code
    except OSError as exc:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename and exc.strerror else str(exc)
        print(f"{args.prog}: {text}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
