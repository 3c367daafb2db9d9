"""The one package that talks to etcd: a small v3 client for the etcd backend.

It sends etcd's own protobuf messages (the stubs python3-etcd3 ships) on grpc
channels of its own, rather than through python3-etcd3's client object,
because that object loses what flowd needs: a transaction's header revision,
the text of every error but four, and, after one failed call, it refuses its
endpoint for 300 s ("Trying to use a failed node") even once etcd is back;
its watch thread dies on a broken stream without telling its callbacks.

Every call has one deadline (``timeout``), across however many members it
tries. A call that etcd certainly did not apply (member unreachable, no
leader) moves on to the next member until the deadline; a read moves on after
any failure; a write that may have been applied is never sent twice: it
raises UnavailableError with ``data["maybe_applied"]`` true, and the caller
finds out (flowd writes a retry key in the same transaction for that). Every
failure is one of flowd's errors (see etcd_errors.py), naming the endpoint.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

# Every failure reaches flowd as one error naming the member; grpc's C core would
# also print its own lines to stderr on each failed connect or handshake.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import grpc  # noqa: E402
from etcd3 import etcdrpc  # noqa: E402
from flowd_client.errors import FlowdError, InvalidArgumentError, UnavailableError  # noqa: E402

from ..etcd_endpoints import check_options, read_tls_file
from ..etcd_errors import client_error, error_for_status, gave_up, safe_to_retry
from ..etcd_types import (
    Compare,
    Delete,
    Get,
    KeyValue,
    Lease,
    OpResult,
    Put,
    RangeResult,
    TxnOp,
    TxnResult,
    prefix_end,
)
from ..etcd_watch import EtcdWatch
from .watch_stream import REQUIRE_LEADER, GrpcWatchStream

T = TypeVar("T")

#: etcd's "require leader" metadata: a member cut off from its leader answers
#: (and ends watch streams) with "no leader" at once instead of waiting.
#: etcd 3.4 walks its index over the rest of the range for every page (a
#: limit-1 read of a 100k-key prefix took 57 ms here), so pages are large:
#: 100k flows read in 4.2 s by pages of 1000, 2.0 s by 10,000, 1.7 s at once
DEFAULT_PAGE_SIZE = 10_000
#: a member unreachable this long gets a new channel (see _Endpoint.unreachable)
RECONNECT_AFTER = 1.0
_CHANNEL_OPTIONS = (
    # as etcd's Go client: etcd bounds requests itself and refuses with a clear error;
    # a watch response may carry up to 1000 revisions, each up to max-request-bytes
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    # a silent (not closed) connection is noticed in ~15 s; etcd allows pings >= 5 s apart
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    # retry a lost member within a second (grpc's default backoff grows to 120 s);
    # not grpc.min_reconnect_backoff_ms: grpc also takes it as each connect
    # attempt's timeout, and short ones fail on a loaded machine
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
)
_COMPARE_OPS = {"==": etcdrpc.Compare.EQUAL, "!=": etcdrpc.Compare.NOT_EQUAL,
                "<": etcdrpc.Compare.LESS, ">": etcdrpc.Compare.GREATER}
_COMPARE_FIELDS = {"mod": (etcdrpc.Compare.MOD, "mod_revision"),
                   "create": (etcdrpc.Compare.CREATE, "create_revision"),
                   "version": (etcdrpc.Compare.VERSION, "version"),
                   "value": (etcdrpc.Compare.VALUE, "value")}


class _Endpoint:
    """One member's URL, channel and stubs."""

    def __init__(self, url: str, target: str, creds: grpc.ChannelCredentials | None) -> None:
        self.url, self._target, self._creds = url, target, creds
        self.unreachable_since: float | None = None
        self._connect()

    def _connect(self) -> None:
        options = list(_CHANNEL_OPTIONS)
        self.channel = (grpc.secure_channel(self._target, self._creds, options) if self._creds
                        else grpc.insecure_channel(self._target, options))
        self.kv = etcdrpc.KVStub(self.channel)
        self.lease = etcdrpc.LeaseStub(self.channel)
        self.watch = etcdrpc.WatchStub(self.channel)
        self.connected_at = time.monotonic()

    def unreachable(self) -> None:
        """Start afresh on a member unreachable for a while: grpc can hold a channel
        in backoff, or (grpcio 1.70, 1.75 here) wedge it, for many seconds after the
        member is back, where a new channel connects at once. The old channel is
        not closed: calls still on it finish, and it goes with its last reference."""
        now = time.monotonic()
        if self.unreachable_since is None:
            self.unreachable_since = now
        elif now - max(self.unreachable_since, self.connected_at) >= RECONNECT_AFTER:
            self._connect()


def _kv(kv: Any) -> KeyValue:
    return KeyValue(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)


def _compare(c: Compare) -> Any:
    target, field = _COMPARE_FIELDS[c.target]
    if (c.target == "value") != isinstance(c.value, bytes):
        raise TypeError(f"a {c.target} compare needs {'bytes' if c.target == 'value' else 'int'}")
    msg = etcdrpc.Compare(key=c.key, result=_COMPARE_OPS[c.op], target=target)
    setattr(msg, field, c.value)
    if c.range_end is not None:
        msg.range_end = c.range_end
    return msg


def _request_op(op: TxnOp) -> Any:
    if isinstance(op, Put):
        return etcdrpc.RequestOp(
            request_put=etcdrpc.PutRequest(key=op.key, value=op.value, lease=op.lease))
    if isinstance(op, Delete):
        return etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(
            key=op.key, range_end=op.range_end or b""))
    if isinstance(op, Get):
        return etcdrpc.RequestOp(
            request_range=etcdrpc.RangeRequest(key=op.key, range_end=op.range_end or b""))
    raise TypeError(f"not a transaction operation: {op!r}")


def _op_result(resp: Any) -> OpResult:
    kind = resp.WhichOneof("response")
    if kind == "response_range":
        return OpResult(kvs=tuple(_kv(kv) for kv in resp.response_range.kvs))
    if kind == "response_delete_range":
        return OpResult(deleted=resp.response_delete_range.deleted)
    return OpResult()


class EtcdAdapter:
    """A connection to one etcd cluster through any of its members."""

    def __init__(self, endpoints: Sequence[str], *, timeout: float = 5.0,
                 cacert: str | None = None, cert: str | None = None,
                 key: str | None = None) -> None:
        targets = check_options(endpoints, timeout, cert, key, tls=bool(cacert or cert))
        self.timeout = float(timeout)
        creds = None
        if any(secure for _, _, secure in targets):
            creds = grpc.ssl_channel_credentials(
                read_tls_file(cacert, "CA certificate"), read_tls_file(key, "client key"),
                read_tls_file(cert, "client certificate"))
        self._endpoints = [_Endpoint(url, target, creds if secure else None)
                           for url, target, secure in targets]
        self._current = 0
        self._lock = threading.Lock()
        self._watches: weakref.WeakSet[EtcdWatch] = weakref.WeakSet()

    @property
    def endpoint(self) -> str:
        """The member calls go to now."""
        return self._endpoints[self._current].url

    def close(self) -> None:
        for w in list(self._watches):
            w.cancel()
        for ep in self._endpoints:
            ep.channel.close()

    def __enter__(self) -> EtcdAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls -----------------------------------------------------------------

    def _pick(self) -> _Endpoint:
        return self._endpoints[self._current]

    def _failed(self, ep: _Endpoint, err: FlowdError) -> None:
        """Send later calls elsewhere: the next member in the list."""
        if err.data.get("reason") == "unreachable":
            ep.unreachable()
        with self._lock:
            i = self._endpoints.index(ep)
            if self._current == i:
                self._current = (i + 1) % len(self._endpoints)

    def _call(self, rpc: Callable[[_Endpoint, float], T], *, write: bool) -> T:
        deadline = time.monotonic() + self.timeout
        pause, tried = 0.02, 0
        seen: dict[str, FlowdError] = {}
        while True:
            ep = self._pick()
            try:
                result = rpc(ep, max(0.001, deadline - time.monotonic()))
                ep.unreachable_since = None
                return result
            except grpc.RpcError as exc:
                err = error_for_status(exc.code().name, exc.details() or "", ep.url)
            except FlowdError:
                raise
            except Exception as exc:
                raise client_error(ep.url, exc) from exc
            if not isinstance(err, UnavailableError):
                raise err
            self._failed(ep, err)
            tried += 1
            seen[ep.url] = err
            if write and not safe_to_retry(err):
                raise err
            left = deadline - time.monotonic()
            if left <= 0 or (tried % len(self._endpoints) == 0 and left <= pause):
                raise gave_up(self.timeout, seen, err)
            if tried % len(self._endpoints) == 0:
                time.sleep(pause)
                pause = min(pause * 2, 0.5)

    def txn(self, compares: Iterable[Compare], success: Iterable[TxnOp],
            failure: Iterable[TxnOp] = ()) -> TxnResult:
        """One etcd transaction: if every compare holds run ``success``, else ``failure``.

        Each of the three lists is bounded by etcd's --max-txn-ops (128 by
        default; TooLargeError above it) and the whole request by
        --max-request-bytes (1.5 MiB; TooLargeError). A branch may write a key
        once (a put and a delete of it, or a delete range over a put, is
        InvalidArgumentError "duplicate key").
        """
        success, failure = list(success), list(failure)
        try:
            request = etcdrpc.TxnRequest(compare=[_compare(c) for c in compares],
                                         success=[_request_op(op) for op in success],
                                         failure=[_request_op(op) for op in failure])
        except (TypeError, ValueError, KeyError) as exc:
            raise client_error(self.endpoint, exc) from exc
        writes = any(not isinstance(op, Get) for op in (*success, *failure))
        resp = self._call(lambda ep, t: ep.kv.Txn(request, timeout=t, metadata=REQUIRE_LEADER),
                          write=writes)
        return TxnResult(resp.succeeded, resp.header.revision,
                         tuple(_op_result(r) for r in resp.responses))

    def _range(self, key: bytes, range_end: bytes, revision: int, limit: int) -> Any:
        request = etcdrpc.RangeRequest(key=key, range_end=range_end, revision=revision,
                                       limit=limit)
        return self._call(lambda ep, t: ep.kv.Range(request, timeout=t, metadata=REQUIRE_LEADER),
                          write=False)

    def get(self, key: bytes) -> tuple[KeyValue | None, int]:
        """The key (or None) and the revision it was read at (linearizable)."""
        resp = self._range(key, b"", 0, 0)
        return (_kv(resp.kvs[0]) if resp.kvs else None), resp.header.revision

    def current_revision(self) -> int:
        """The cluster's revision now: that of its last write (linearizable)."""
        return int(self._range(b"\0", b"", 0, 1).header.revision)

    def range_prefix(self, prefix: bytes, *, revision: int = 0,
                     page_size: int = DEFAULT_PAGE_SIZE) -> RangeResult:
        """Every key under ``prefix`` at one revision (now if 0), sorted by creation.

        Read in pages of ``page_size`` keys (memory per page: that many
        values), each page at the revision of the first, so the result is one
        consistent state however large; sorted here, since etcd sorts a range
        only by fetching all of it for every page. CompactedError if that
        revision is compacted meanwhile: read again.
        """
        if page_size < 1:
            raise InvalidArgumentError(f"page_size must be >= 1, not {page_size}")
        end, start, kvs = prefix_end(prefix), prefix, list[KeyValue]()
        while True:
            resp = self._range(start, end, revision, page_size)
            revision = revision or resp.header.revision
            kvs.extend(_kv(kv) for kv in resp.kvs)
            if not resp.more or not resp.kvs:
                break
            start = resp.kvs[-1].key + b"\0"
        kvs.sort(key=lambda kv: (kv.create_revision, kv.key))
        return RangeResult(revision, tuple(kvs))

    def watch_prefix(self, prefix: bytes, start_revision: int = 0, *,
                     progress_notify: bool = True) -> EtcdWatch:
        """Changes under ``prefix`` from ``start_revision`` on (0: from now).

        An iterator of WatchBatch that follows member failures by itself: see
        EtcdWatch (flowd/etcd_watch.py) for what it promises.
        """
        if start_revision < 0:
            raise InvalidArgumentError(f"start_revision must be >= 0, not {start_revision}")

        def open_stream(start: int) -> GrpcWatchStream:
            create = etcdrpc.WatchCreateRequest(key=prefix, range_end=prefix_end(prefix),
                                                start_revision=start,
                                                progress_notify=progress_notify)
            try:
                return GrpcWatchStream(self, self._pick(), create)
            except Exception as exc:
                raise client_error(self.endpoint, exc) from exc
        w = EtcdWatch(open_stream, start_revision, self.timeout, f"etcd watch of {prefix!r}")
        self._watches.add(w)
        return w

    # -- leases ----------------------------------------------------------------

    def _lease(self, method: str, request: Any) -> Any:
        return self._call(lambda ep, t: getattr(ep.lease, method)(
            request, timeout=t, metadata=REQUIRE_LEADER), write=False)

    def grant_lease(self, ttl: int) -> Lease:
        """A new lease of ``ttl`` seconds; keys put with it go when it expires.

        Retried freely: a grant whose answer was lost leaves a lease nobody
        uses, which expires by itself.
        """
        resp = self._lease("LeaseGrant", etcdrpc.LeaseGrantRequest(TTL=ttl, ID=0))
        return Lease(resp.ID, resp.TTL)

    def revoke_lease(self, lease_id: int) -> None:
        """End a lease now and delete its keys; a lease already gone is no error."""
        try:
            self._lease("LeaseRevoke", etcdrpc.LeaseRevokeRequest(ID=lease_id))
        except InvalidArgumentError as exc:
            if exc.data.get("reason") != "lease_not_found":
                raise

    def lease_ttl(self, lease_id: int) -> int:
        """Seconds the lease has left; -1 if it expired or never was."""
        return int(self._lease("LeaseTimeToLive", etcdrpc.LeaseTimeToLiveRequest(ID=lease_id)).TTL)

    def refresh_lease(self, lease_id: int) -> int:
        """Restart the lease's TTL once; returns it (0 if the lease is gone)."""
        request = etcdrpc.LeaseKeepAliveRequest(ID=lease_id)

        def rpc(ep: _Endpoint, t: float) -> int:
            stream = ep.lease.LeaseKeepAlive(iter([request]), timeout=t, metadata=REQUIRE_LEADER)
            try:
                return int(next(iter(stream)).TTL)
            finally:
                stream.cancel()
        return self._call(rpc, write=False)
