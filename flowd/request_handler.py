"""The request path without sockets: parse, apply, group-commit, reply, publish.

Reads see committed state and are answered at once. Writes are staged in a
group transaction; :meth:`RequestHandler.commit` appends the group's records to the
journal with one fsync, applies them to the store and only then produces the
replies ("ok" means durable) and the events. A failed append drops the group:
nothing was applied, every writer in it gets UNAVAILABLE.

No reply may show a write that is not yet durable. A refusal computed against
the group's staged writes (a conflict with a staged revision, NOT_FOUND for a
flow a staged write deleted, a failed batch ``check``) therefore waits in the
group like a write and goes out, in order, after the fsync; if the append
fails it becomes UNAVAILABLE with the rest of the group. A refusal that the
committed store alone explains goes out at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from flowd_client import protocol
from flowd_client.errors import FlowdError, InternalError, UnavailableError

from . import ops
from .backend import Backend, LocalBackend, StaleMirror, stamp_record
from .history import History, build_event
from .limits import Limits
from .logsetup import RateLimitedLogger, RefusalReport
from .paging import Pager
from .pending import Envelope, Out, PendingWrite
from .retry_keys import RetryKeys
from .snapshotter import Snapshotter
from .stats import Stats, limit_report, process_stats
from .storage.journal import Journal
from .store import Store, Txn

log = logging.getLogger("flowd.request_handler")
refused_log = RateLimitedLogger(logging.getLogger("flowd.refused"))

#: times a write is computed again over a caught-up mirror before UNAVAILABLE
MAX_RECOMPUTE = 8
StatsRows = Callable[[], dict[str, Any]]


class RequestHandler:
    """Owns the store's request path; the server loop feeds it frames."""

    def __init__(self, store: Store, journal: Journal, snapshotter: Snapshotter, *,
                 history: int, info: dict[str, Any] | None = None,
                 max_request_bytes: int, limits: Limits,
                 backend: Backend | None = None) -> None:
        self.store = store
        #: where writes become durable (the journal, or etcd): see flowd.backend
        self.backend: Backend = backend or LocalBackend(journal)
        #: the configured request limit: enforced here, reported by hello
        self.max_request_bytes = max_request_bytes
        self.journal = journal
        self.snap = snapshotter
        self.limits = limits
        self.history = History(history, store.revision, limits.history_bytes,
                               limits.reply_page_bytes)
        self.keys = RetryKeys(max_bytes=limits.retry_keys_bytes)
        self.pager = Pager(limits.reply_page_bytes)
        self.stats = Stats()
        self.refusals = RefusalReport(log)
        self.info = info or {}
        self.group: Txn | None = None
        self.pending: list[PendingWrite] = []
        self.pending_keys: dict[tuple[str, int], PendingWrite] = {}
        self.group_clients: set[Envelope] = set()
        #: packed events for the change feed (History.add packs each once)
        self.events: list[bytes] = []
        #: the server's own figures (queues, file descriptors) for stats
        self.server_stats: StatsRows | None = None
        self.save_waiters: list[tuple[Envelope, int, int]] = []
        self.extra_stats: StatsRows | None = None
        #: the stray side's rows (unresolved conflicts, memory of written files)
        self.stray_stats: StatsRows | None = None
        #: the CURVE gate's counters (requests per key name), with --curve-dir
        self.curve_stats: StatsRows | None = None

    # ------------------------------------------------------------ requests

    def handle(self, client: Envelope, frame: bytes) -> Out:
        """One request frame; returns the replies that can go out now."""
        try:
            rid, op, args, key = protocol.parse_request(frame, self.max_request_bytes)
        except FlowdError as exc:
            return [(client, self._refuse(exc, exc.data.get("request_id")))]
        except Exception:  # a checker bug must cost one request, never the daemon
            log.exception("internal error while parsing a request")
            return [(client, self._refuse(InternalError("could not parse the request"), None))]
        self.stats.count_op(op)
        self.stats.saw_client(client[0])
        try:
            spec = protocol.OPS[op]
            if spec.kind == "read":
                out = self.commit() if client in self.group_clients else []
                out.append((client, protocol.reply_ok(rid, self._read(spec, args))))
                return out
            if spec.handler == "handler.save":
                return self.save(client, rid, args)
            return self._write(client, rid, op, args, key)
        except FlowdError as exc:
            return [(client, self._refuse(exc, rid))]
        except Exception:
            log.exception("internal error on %s", op)
            return [(client, self._refuse(InternalError(f"internal error on {op}"), rid))]

    def refuse(self, client: Envelope, frame: bytes, exc: FlowdError) -> Out:
        """A request refused before it is served (its peer's key is no longer allowed)."""
        try:
            rid = protocol.parse_request(frame, self.max_request_bytes)[0]
        except Exception:  # noqa: BLE001 - the refusal goes out without an id then
            rid = None
        return [(client, self._refuse(exc, rid))]

    def _refuse(self, exc: FlowdError, rid: Any) -> bytes:
        self.stats.count_error(exc.code)
        refused_log.info(exc.code, "refused request: %s: %s", exc.code, exc.message)
        return protocol.reply_error(rid, exc)

    def _read(self, spec: protocol.Op, args: dict[str, Any]) -> Any:
        """The table's handler: a function of flowd.ops over the store, or a method here."""
        where, name = spec.handler.split(".", 1)
        if where == "ops":
            return getattr(ops, name)(self.store, args)
        return getattr(self, name)(args)

    def page(self, args: dict[str, Any]) -> Any:
        return self.pager.page(self.store, args)

    def history_since(self, args: dict[str, Any]) -> protocol.Packed:
        """The kept events as they are (the same bytes as packing them decoded)."""
        return protocol.packed_map({
            "changes": protocol.packed_array(self.history.since_packed(args["since"])),
            "revision": protocol.pack(self.store.revision)})

    def ping(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"pong": True, "revision": self.store.revision}

    def hello(self, args: dict[str, Any]) -> dict[str, Any]:
        if args["version"] > protocol.PROTOCOL_VERSION:
            raise protocol.UnsupportedVersionError(
                f"client speaks protocol {args['version']}, this daemon speaks "
                f"{protocol.PROTOCOL_VERSION}", {"server": protocol.PROTOCOL_VERSION,
                                                 "client": args["version"]})
        return {"protocol": protocol.PROTOCOL_VERSION, "revision": self.store.revision,
                "max_request_bytes": self.max_request_bytes, **self.info}

    def _write(self, client: Envelope, rid: int, op: str, args: dict[str, Any],
               key: tuple[str, int] | None, attempt: int = 0) -> Out:
        if key is not None:
            seen = self.keys.get(key) or self.backend.lookup(key)
            if seen is not None:
                ok, value, rev = seen
                self.stats.retries += 1
                if ok:
                    return [(client, protocol.reply_ok(rid, value, rev))]
                return [(client, protocol.reply_error(rid, value))]
            inflight = self.pending_keys.get(key)
            if inflight is not None:
                inflight.followers.append((client, rid))
                return []
        if self.group is None:
            self.group = self.store.begin()
        txn = self.store.begin(parent=self.group)
        try:
            result = ops.WRITES[op](txn, args)
        except FlowdError as exc:
            if self._staged_explains(op, args, exc):
                self._stage(PendingWrite(client, rid, key, None, None, [], exc))
                return []
            if key is not None:
                self.keys.put(key, False, exc)
            raise
        record = txn.record()
        if record is not None:
            if key is not None:
                record["keys"] = [[list(key), result]]
            txn.merge_into_parent()
        self._stage(PendingWrite(client, rid, key, record, result, [], None, op, args))
        if self.backend.one_write_per_group:
            return self.commit(attempt)
        return []

    def _stage(self, pw: PendingWrite) -> None:
        self.pending.append(pw)
        self.group_clients.add(pw.client)
        if pw.key is not None:
            self.pending_keys[pw.key] = pw

    def _staged_explains(self, op: str, args: dict[str, Any], exc: FlowdError) -> bool:
        """True if ``exc`` is not what the committed store alone answers.

        Only then does the refusal depend on writes that are not durable yet.
        Running the op again over the committed store costs one more op, and only
        on the refusal path of a request that shares its group with staged writes.
        """
        group = self.group
        if group is None or group.next_rev == self.store.revision + 1:
            return False  # nothing staged: the committed store is all the op saw
        try:
            ops.WRITES[op](self.store.begin(), args)
        except FlowdError as alone:
            return (alone.code, alone.message, alone.data) != (exc.code, exc.message, exc.data)
        return True

    # ------------------------------------------------------------ commit

    def commit(self, attempt: int = 0) -> Out:
        """Make the group durable (the backend: one append and fsync, or an etcd
        transaction), apply it, answer it."""
        pending, self.pending = self.pending, []
        self.group, self.pending_keys, self.group_clients = None, {}, set()
        if not pending:
            return []
        records = [pw.record for pw in pending if pw.record is not None]
        if records:
            t0 = time.perf_counter()
            try:
                revs, written = self.backend.durable(records, self.store.revision)
            except StaleMirror as exc:
                return self._recompute(pending, exc, attempt)
            except OSError as exc:
                return self._group_failed(pending, exc)
            except FlowdError as exc:  # the store of record's answer (etcd: too large, away)
                return self._group_refused(pending, exc)
            self.stats.journal_bytes += written
            self.stats.observe_commit(time.perf_counter() - t0, len(records))
            for record, rev in zip(records, revs, strict=True):
                earlier = self.backend.before(rev)
                if earlier is None:
                    stamp_record(record, rev)
                    continue
                self.apply_remote(earlier)
                self.apply_durable(record, rev)
            self.snap.note_change(time.monotonic())
        out: Out = []
        rev = self.store.revision
        for pw in pending:
            if pw.error is not None:
                self._answer_refusal(pw, out)
                continue
            wrote = pw.record["rev"] if pw.record is not None else rev
            if pw.key is not None:
                self.keys.put(pw.key, True, pw.result, wrote)
            out.append((pw.client, protocol.reply_ok(pw.rid, pw.result, wrote)))
            out.extend((c, protocol.reply_ok(r, pw.result, wrote)) for c, r in pw.followers)
        return out

    def apply_durable(self, record: dict[str, Any], rev: int) -> None:
        """Apply a record the backend made durable at ``rev`` and publish it. With a
        gapped backend (etcd) its event says the feed's previous revision (``prev``)."""
        stamp_record(record, rev)
        if self.backend.gapped:
            record["prev"] = self.store.revision
        self.store.apply_record(record, gapped=self.backend.gapped)
        self.events.append(self.history.add(build_event(record, self.store)))

    def apply_remote(self, records: list[dict[str, Any]]) -> None:
        """Writes other hosts made (the etcd watch); ours are already applied."""
        for record in records:
            if record["rev"] > self.store.revision:
                self.apply_durable(record, record["rev"])
                self.snap.note_change(time.monotonic())

    def _recompute(self, pending: list[PendingWrite], exc: StaleMirror, attempt: int) -> Out:
        """The store of record moved on under this host's mirror: catch up, compute
        the write again (so if_revision and the current-flow rules see that state)."""
        catch_up = getattr(self.backend, "catch_up", None)
        if attempt >= MAX_RECOMPUTE or catch_up is None:
            return self._group_failed(pending, exc)
        try:
            self.apply_remote(catch_up(exc.revision))
        except FlowdError as err:
            return self._group_refused(pending, err)
        out: Out = []
        for pw in pending:
            assert pw.args is not None
            out.extend(self._write(pw.client, pw.rid, pw.op, pw.args, pw.key, attempt + 1))
        return out

    def _answer_refusal(self, pw: PendingWrite, out: Out) -> None:
        """A staged-state refusal, now that what it saw is durable."""
        assert pw.error is not None
        if pw.key is not None:
            self.keys.put(pw.key, False, pw.error)
        out.append((pw.client, self._refuse(pw.error, pw.rid)))
        out.extend((c, protocol.reply_error(r, pw.error)) for c, r in pw.followers)

    def _group_failed(self, pending: list[PendingWrite], exc: OSError) -> Out:
        self.stats.journal_failures += 1
        self.stats.last_journal_error = f"{type(exc).__name__}: {exc}"
        self.refusals.refused(len(pending), exc)
        return self._group_refused(pending, UnavailableError(
            f"the daemon could not make the write durable ({exc}); "
            "nothing was applied, retry later"))

    def _group_refused(self, pending: list[PendingWrite], err: FlowdError) -> Out:
        out: Out = []
        for pw in pending:
            out.append((pw.client, self._refuse(err, pw.rid)))
            out.extend((c, protocol.reply_error(r, err)) for c, r in pw.followers)
        return out

    def commit_internal(self, txn: Txn, merge: dict[str, Any] | None = None) -> None:
        """Journal and apply a change flowd makes itself; OSError on failure (nothing
        applied). A stray merge (``merge``: its report) is a revision of its own even
        when it changes no flow, so the feed and the journal both say it happened."""
        record = txn.record()
        if record is None:
            if merge is None:
                return
            record = {"rev": txn.rev, "ts": txn.ts, "changes": [], "current": txn.current}
        if merge is not None:
            record["merge"] = merge
        try:
            revs, _ = self.backend.durable([record], self.store.revision, sync=True)
        except FlowdError as exc:  # etcd refused or is away: the merge is tried again
            raise OSError(exc.message) from exc
        self.apply_durable(record, revs[0])
        self.snap.note_change(0.0)

    def take_events(self) -> list[bytes]:
        events, self.events = self.events, []
        return events

    # ------------------------------------------------------------ save

    def save(self, client: Envelope, rid: int, args: dict[str, Any]) -> Out:
        out = self.commit()
        if not args.get("force"):
            # every acknowledged write is already durable in the journal
            out.append((client, protocol.reply_ok(rid, True)))
            return out
        self.save_waiters.append((client, rid, self.store.revision))
        self.snap.note_change(0.0)
        return out

    def answer_savers(self, installed_rev: int | None) -> Out:
        """Reply to save(force=True) callers whose revision is now in flows.json."""
        out, waiting = [], []
        for client, rid, rev in self.save_waiters:
            if installed_rev is None:
                out.append((client, protocol.reply_ok(rid, False)))
            elif installed_rev >= rev:
                out.append((client, protocol.reply_ok(rid, True)))
            else:
                waiting.append((client, rid, rev))
        self.save_waiters = waiting
        return out

    # ------------------------------------------------------------ stats

    def collect_stats(self, args: dict[str, Any] | None = None) -> dict[str, Any]:
        s = self.store
        out = {"flows": len(s), "revision": s.revision, "current_flow_id": s.current_flow_id,
               "names_unindexed": s.unindexed,
               "data_dir": self.info.get("data_dir"),
               "file_revision": self.snap.file_revision,
               "snapshot_revision": self.snap.installed_rev,
               "snapshot_lag_revisions": s.revision - self.snap.installed_rev,
               "snapshot": self.snap.stats.as_dict(),
               "journal": {"bytes": self.journal.total_bytes(),
                           "segments": len(self.journal.segments),
                           "durability": self.journal.durability},
               "history_floor": self.history.floor, "backend": self.backend.describe(),
               **self.stats.as_dict()}
        out["limits"] = self.limit_stats()
        out["process"] = process_stats()
        if self.stray_stats is not None:
            out.update(self.stray_stats())
        if self.extra_stats is not None:
            out.update(self.extra_stats())
        if self.curve_stats is not None:
            out["curve"] = self.curve_stats()
        return out

    def limit_stats(self) -> dict[str, Any]:
        """Every memory bound with what it holds now (README, Limits)."""
        out = limit_report(self.history, self.keys, self.limits, self.refusals.total)
        if self.server_stats is not None:
            out.update(self.server_stats())
        return out
