"""Start-up: rebuild the store from flows.json (or an older generation) and the journal.

Order of trust: flows.json; if it is unreadable, the copy flowd last wrote
(``.flows.json.written``, a hard link), then the previous generation
(``flows.json.prev``); each plus the journal records after its revision.
Whatever cannot be read is kept aside, never deleted. A flows.json that is
not the file flowd last wrote (an old tool rewrote it while flowd was down)
is flagged ``foreign``: the store comes from the file flowd last wrote, and the
runtime then merges the tool's file like one it notices while running.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowd_client.gc_pause import gc_paused

from ..store import Store
from .evidence import keep_aside
from .journal import Journal, ScanResult
from .lines_split import ExpectedIds
from .loader import LoadResult, load_file
from .migrate import CorruptFileError
from .snapshot import PREVIOUS, SNAPSHOT, WRITTEN, fingerprint

log = logging.getLogger("flowd.recovery")


@dataclass
class Recovery:
    source: str = "empty"
    seconds: float = 0.0
    migrated: bool = False
    notes: list[str] = field(default_factory=list)
    replayed: int = 0
    torn_bytes: int = 0
    corrupt: list[str] = field(default_factory=list)
    kept_aside: list[Path] = field(default_factory=list)
    needs_snapshot: bool = False
    #: flows.json is not the file flowd last wrote: an old tool rewrote it meanwhile
    foreign: bool = False
    #: the loaded snapshot's flows before replay (it must be in the memory of files)
    base_flows: Mapping[str, Any] = field(default_factory=dict)
    #: their digests, when the parse took them (else the memory digests base_flows)
    base_digests: dict[str, Any] | None = None
    #: how a file flowd did not write is parsed (None: here; flowd.load_child: in a
    #: child, when big); None back: here after all
    parse: Callable[[Path], LoadResult | None] | None = None
    base_current: str | None = None
    base_revision: int = 0
    #: records replayed from the journal, for the change feed
    records: list[dict[str, Any]] = field(default_factory=list)
    #: (key, first result, revision) of every journal record the store holds
    keys: list[tuple[Any, Any, int]] = field(default_factory=list)
    #: meta.file_revision of the loaded snapshot
    file_revision: int = 0
    #: how it was read: "lines" (flowd's own file, checked) or "parsed"
    read: str = "parsed"

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "read": self.read, "seconds": round(self.seconds, 4),
                "migrated": self.migrated, "replayed": self.replayed,
                "torn_bytes": self.torn_bytes, "corrupt": self.corrupt,
                "kept_aside": [p.name for p in self.kept_aside]}


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _try_load(path: Path, rec: Recovery, own: bool = True,
              ids: ExpectedIds = ()) -> LoadResult | None:
    """``own``: a file flowd wrote (read back by its lines when it has flowd's layout)."""
    if not path.exists():
        return None
    try:
        got = rec.parse(path) if rec.parse is not None and not own else None
        return got if got is not None else load_file(path, own=own, ids=ids)
    except CorruptFileError as exc:
        aside = keep_aside(path, "corrupt")
        rec.kept_aside.append(aside)
        rec.corrupt.append(f"{path.name}: {exc}")
        log.error("!!! %s is unreadable (%s); its bytes are kept in %s", path.name, exc, aside.name)
        return None


def _load_snapshot(data_dir: Path, rec: Recovery, ids: ExpectedIds) -> LoadResult | None:
    primary = data_dir / SNAPSHOT
    got = _try_load(primary, rec, own=_same_file(primary, data_dir / WRITTEN), ids=ids)
    if got is not None:
        rec.source = SNAPSHOT
        return got
    for name in (WRITTEN, PREVIOUS):
        path = data_dir / name
        if path.exists() and not _same_file(path, primary):
            got = _try_load(path, rec, ids=ids)
            if got is not None:
                log.warning("rebuilding from the older generation %s plus the journal", name)
                rec.source, rec.needs_snapshot = name, True
                return got
    if primary.exists() or rec.corrupt:
        rec.needs_snapshot = True
    return None


def _is_foreign(data_dir: Path, got: LoadResult) -> bool:
    """flows.json was rewritten by someone else since flowd last wrote it."""
    written = data_dir / WRITTEN
    if not written.exists():
        return False
    return not _same_file(written, data_dir / SNAPSHOT)


def _keep_keys(rec: Recovery, record: dict[str, Any]) -> None:
    rec.keys.extend((key, result, record["rev"]) for key, result in record.get("keys", ()))


def _replay(store: Store, scan: ScanResult, rec: Recovery) -> None:
    for record in scan.records:
        if record["rev"] <= store.revision:
            _keep_keys(rec, record)  # applied: the snapshot holds it
            continue
        if record["rev"] != store.revision + 1:
            rec.corrupt.append(f"journal: gap after revision {store.revision} "
                               f"(next record is {record['rev']})")
            log.error("journal has a gap after revision %d; replay stops there", store.revision)
            break
        if rec.base_flows is store.flows:  # the file's flows, kept before the journal's
            rec.base_flows = store.flows.copy()  # change them (only then: 42 ms at 1M)
        store.apply_record(record)
        rec.records.append(record)
        _keep_keys(rec, record)
        rec.replayed += 1


def recover(data_dir: Path, store: Store, journal: Journal, ids: ExpectedIds = (),
            parse: Callable[[Path], LoadResult | None] | None = None) -> Recovery:
    """Fill ``store`` from disk; GC is off meanwhile (100k flows: 1.7 s with it, 0.46 s
    without). ``ids``: those of the file flowd last wrote, in order, as the memory of
    written files holds them (the store is keyed by the same strings where they match),
    or what gives them when called, maybe more than once (the same ids each time: see
    :data:`.lines_split.ExpectedIds`). ``parse``: see :attr:`Recovery.parse`."""
    rec = Recovery(parse=parse)
    t0 = time.perf_counter()
    with gc_paused():
        try:
            _recover(data_dir, store, journal, rec, ids)
        finally:
            # the loaded store never needs scanning by the cyclic GC: frozen before the
            # GC is back, or the first allocation after the pause walks all of it
            gc.freeze()
    rec.seconds = time.perf_counter() - t0
    return rec


def _meta_int(got: LoadResult, key: str) -> int:
    value = got.doc["meta"].get(key, 0)
    return value if type(value) is int else 0


def _own_newer_snapshot(got: LoadResult, written: LoadResult) -> bool:
    """flowd died between installing flows.json and linking it as written: a stray tool
    never raises meta.revision (the old ones drop it), so a higher one is ours."""
    return not got.migrated and _meta_int(got, "revision") > _meta_int(written, "revision")


def _recover(data_dir: Path, store: Store, journal: Journal, rec: Recovery,
             ids: ExpectedIds) -> None:
    got = _load_snapshot(data_dir, rec, ids)
    if got is not None and rec.source == SNAPSHOT and _is_foreign(data_dir, got):
        base = _try_load(data_dir / WRITTEN, rec, ids=ids)
        if base is not None and _own_newer_snapshot(got, base):
            rec.needs_snapshot = True  # link it as written again
        elif base is not None:
            got, rec.foreign = base, True
            rec.source = WRITTEN
    if got is not None:
        rec.file_revision = _meta_int(got, "file_revision")
        rec.base_revision = _meta_int(got, "revision")
        rec.migrated, rec.notes = got.migrated, got.notes
        rec.read = "lines" if got.by_lines else "parsed"
        if got.migrated:
            aside = keep_aside(data_dir / SNAPSHOT, f"backup-v{got.source_version or 'none'}")
            rec.kept_aside.append(aside)
            rec.needs_snapshot = True
            log.warning("flows.json was schema %s: migrated to 3.0; original kept as %s",
                        got.source_version, aside.name)
        parsed = got.doc["flows"]
        store.load(got.doc)
        # the parsed dicts, while they live: the memory of files digests them if its
        # sidecar is behind (decoding every line again for that took 10 s at 1M flows)
        rec.base_flows = parsed if not got.by_lines else store.flows  # see _replay
        rec.base_digests = got.digests
    else:
        rec.base_flows = store.flows  # see _replay
    rec.base_current = store.current_flow_id
    scan = journal.scan()
    rec.torn_bytes, rec.kept_aside = scan.torn_bytes, rec.kept_aside + scan.kept_aside
    rec.corrupt.extend(scan.corrupt)
    _replay(store, scan, rec)
    if scan.corrupt:
        rec.needs_snapshot = True  # the kept-aside segments' good records live only in memory


def written_fingerprint(data_dir: Path) -> tuple[int, int, int] | None:
    """Fingerprint of flows.json if it is the file flowd last wrote."""
    path = data_dir / SNAPSHOT
    try:
        if (data_dir / WRITTEN).exists() and not _same_file(path, data_dir / WRITTEN):
            return None
        return fingerprint(os.stat(path))
    except FileNotFoundError:
        return None


def snapshot_exists(data_dir: Path) -> bool:
    return (data_dir / SNAPSHOT).exists()
