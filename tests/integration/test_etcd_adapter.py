"""The etcd adapter against a real 1-member etcd: transactions, ranges, watch, leases, limits."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from etcd_cluster import EtcdCluster
from flowd_client.errors import (
    CompactedError,
    InvalidArgumentError,
    TooLargeError,
    UnavailableError,
)

from flowd.etcd_adapter import EtcdAdapter
from flowd.etcd_types import Compare, Delete, Get, Put, WatchBatch, prefix_end


@pytest.fixture
def etcd(etcd_single: EtcdCluster) -> Iterator[EtcdAdapter]:
    with EtcdAdapter(etcd_single.endpoints, timeout=5.0) as a:
        yield a


@pytest.fixture
def p() -> bytes:
    """A key prefix of this test's own, on the shared cluster."""
    return f"/t/{uuid.uuid4().hex}/".encode()


def test_cas_put_returns_its_revision_and_a_stale_one_fails(etcd: EtcdAdapter, p: bytes) -> None:
    k = p + b"flow_1"
    first = etcd.txn([Compare.mod_revision(k, 0)], [Put(k, b"v1")], [Get(k)])
    assert first.succeeded and first.revision > 0
    kv, read_at = etcd.get(k)
    assert kv is not None and kv.mod_revision == kv.create_revision == first.revision
    assert read_at >= first.revision
    again = etcd.txn([Compare.mod_revision(k, 0)], [Put(k, b"v2")], [Get(k)])
    assert not again.succeeded and again.revision == first.revision
    assert again.results[0].kvs[0].mod_revision == first.revision
    second = etcd.txn([Compare.mod_revision(k, first.revision)], [Put(k, b"v2"), Get(k)])
    assert second.succeeded and second.revision > first.revision
    assert second.results[1].kvs[0].value == b"v2"
    assert second.results[1].kvs[0].create_revision == first.revision
    assert etcd.current_revision() >= second.revision


def test_a_transaction_of_several_keys_is_all_or_nothing(etcd: EtcdAdapter, p: bytes) -> None:
    a, b = p + b"a", p + b"b"
    ra = etcd.txn([], [Put(a, b"1")]).revision
    stale = etcd.txn([Compare.mod_revision(a, ra), Compare.mod_revision(b, 12345)],
                     [Put(a, b"2"), Put(b, b"2")])
    assert not stale.succeeded
    assert etcd.get(a)[0].value == b"1" and etcd.get(b)[0] is None  # type: ignore[union-attr]
    both = etcd.txn([Compare.mod_revision(a, ra), Compare.mod_revision(b, 0)],
                    [Put(a, b"2"), Put(b, b"2"), Delete(p + b"none")])
    assert both.succeeded and both.results[2].deleted == 0
    kva, kvb = etcd.get(a)[0], etcd.get(b)[0]
    assert kva is not None and kvb is not None
    assert kva.mod_revision == kvb.mod_revision == both.revision


def test_a_range_compare_guards_a_prefix_against_puts_but_not_deletions(
        etcd: EtcdAdapter, p: bytes) -> None:
    end = prefix_end(p)
    assert etcd.txn([Compare.range_unchanged_since(p, end, 0)], []).succeeded  # empty range
    etcd.txn([], [Put(p + b"x", b"1")])
    rev = etcd.txn([], [Put(p + b"y", b"1")]).revision
    assert etcd.txn([Compare.range_unchanged_since(p, end, rev)], []).succeeded
    later = etcd.txn([], [Put(p + b"x", b"2")]).revision
    assert not etcd.txn([Compare.range_unchanged_since(p, end, rev)], []).succeeded
    etcd.txn([], [Delete(p + b"y")])
    # the deletion is after `later`, yet the compare over what is left still holds
    assert etcd.txn([Compare.range_unchanged_since(p, end, later)], []).succeeded


def test_a_prefix_reads_sorted_by_creation_at_one_revision(etcd: EtcdAdapter, p: bytes) -> None:
    for name in (b"z", b"b", b"y", b"a", b"x"):  # key order is not creation order
        etcd.txn([], [Put(p + name, name * 3)])
    etcd.txn([], [Put(p + b"c1", b"1"), Put(p + b"c0", b"0")])  # one revision, two keys
    then = etcd.current_revision()
    etcd.txn([], [Put(p + b"z", b"changed"), Delete(p + b"y"), Put(p + b"new", b"n")])
    old = etcd.range_prefix(p, revision=then, page_size=2)
    assert old.revision == then
    assert [kv.key[len(p):] for kv in old.kvs] == [b"z", b"b", b"y", b"a", b"x", b"c0", b"c1"]
    assert old.kvs[0].value == b"zzz"
    now = etcd.range_prefix(p, page_size=1)
    assert now.revision > then
    assert [kv.key[len(p):] for kv in now.kvs] == [b"z", b"b", b"a", b"x", b"c0", b"c1", b"new"]
    assert now.kvs[0].value == b"changed" and now.kvs[0].mod_revision == now.revision
    assert etcd.range_prefix(p + b"nothing/").kvs == ()


def test_compacted_and_future_revisions(etcd: EtcdAdapter, etcd_single: EtcdCluster,
                                        p: bytes) -> None:
    first = etcd.txn([], [Put(p + b"k", b"1")]).revision
    second = etcd.txn([], [Put(p + b"k", b"2")]).revision
    etcd_single.compact(second)
    with pytest.raises(CompactedError) as err:
        etcd.range_prefix(p, revision=first)
    assert etcd_single.endpoints[0] in err.value.message
    assert etcd.range_prefix(p, revision=second).kvs[0].value == b"2"
    with pytest.raises(InvalidArgumentError) as future:
        etcd.range_prefix(p, revision=second + 10_000)
    assert future.value.data["reason"] == "future_revision"
    with pytest.raises(CompactedError) as werr:
        next(etcd.watch_prefix(p, first))
    assert werr.value.data["compacted_revision"] >= second


def test_a_watch_from_a_revision_sees_every_change_with_its_revisions(
        etcd: EtcdAdapter, p: bytes) -> None:
    r1 = etcd.txn([], [Put(p + b"a", b"1")]).revision
    r2 = etcd.txn([], [Put(p + b"a", b"2"), Put(p + b"b", b"1")]).revision
    r3 = etcd.txn([], [Delete(p + b"a")]).revision
    etcd.txn([], [Put(p[:-1] + b"-other/x", b"1")])  # outside the prefix
    w = etcd.watch_prefix(p, r1)
    seen: list[WatchBatch] = []
    while sum(len(b.events) for b in seen) < 4:
        seen.append(next(w))
    events = [e for b in seen for e in b.events]
    assert [(e.kind, e.key[len(p):], e.mod_revision) for e in events] == [
        ("put", b"a", r1), ("put", b"a", r2), ("put", b"b", r2), ("delete", b"a", r3)]
    assert events[1].create_revision == r1 and events[1].version == 2
    assert events[3].create_revision == 0 and events[3].value == b""
    # a catching-up watch may send many revisions in one batch, never one revision in two
    assert len([b for b in seen if any(e.mod_revision == r2 for e in b.events)]) == 1
    w.request_progress()
    progress = next(w)
    assert progress.progress and progress.revision >= r3 and w.next_revision > r3
    late = etcd.watch_prefix(p, r2 + 1)
    assert [(e.kind, e.mod_revision) for e in next(late).events] == [("delete", r3)]
    late.cancel()
    w.cancel()


def test_a_watch_from_now_and_cancel_from_another_thread(etcd: EtcdAdapter, p: bytes) -> None:
    w = etcd.watch_prefix(p)
    got: list[int] = []
    done = threading.Event()

    def follow() -> None:
        for batch in w:
            got.extend(e.mod_revision for e in batch.events)
        done.set()
    t = threading.Thread(target=follow, daemon=True)
    t.start()
    # the watch is from "now" as soon as its stream exists: write until one is seen
    for _ in range(200):
        rev = etcd.txn([], [Put(p + b"k", b"v")]).revision
        if done.wait(0.02) or got:
            break
    assert got and got[-1] <= rev
    w.cancel()
    assert done.wait(10)
    t.join(10)


def test_leases_expire_keys_and_a_gone_lease_is_refused(etcd: EtcdAdapter, p: bytes) -> None:
    lease = etcd.grant_lease(30)
    assert lease.id > 0 and lease.ttl >= 30
    etcd.txn([], [Put(p + b"retry/1", b"reply", lease=lease.id)])
    kv = etcd.get(p + b"retry/1")[0]
    assert kv is not None and kv.lease == lease.id
    assert 0 < etcd.lease_ttl(lease.id) <= 30
    assert etcd.refresh_lease(lease.id) >= 29
    etcd.revoke_lease(lease.id)
    assert etcd.get(p + b"retry/1")[0] is None
    assert etcd.lease_ttl(lease.id) == -1
    etcd.revoke_lease(lease.id)  # already gone: fine
    with pytest.raises(InvalidArgumentError) as err:
        etcd.txn([], [Put(p + b"retry/2", b"reply", lease=lease.id)])
    assert err.value.data["reason"] == "lease_not_found"


def test_etcd_limits_are_too_large_errors(etcd: EtcdAdapter, p: bytes) -> None:
    assert etcd.txn([], [Put(p + b"%d" % i, b"x") for i in range(128)]).succeeded
    with pytest.raises(TooLargeError) as ops:
        etcd.txn([], [Put(p + b"%d" % i, b"x") for i in range(129)])
    assert ops.value.data["reason"] == "too_many_ops"
    for size in (1_600_000, 3_000_000):
        with pytest.raises(TooLargeError) as big:
            etcd.txn([], [Put(p + b"big", b"x" * size)])
        assert big.value.data["reason"] == "request_too_large"
    assert etcd.get(p + b"big")[0] is None
    with pytest.raises(InvalidArgumentError, match="duplicate key"):
        etcd.txn([], [Put(p + b"d", b"1"), Put(p + b"d", b"2")])


def test_malformed_requests_are_invalid_argument(etcd: EtcdAdapter, p: bytes) -> None:
    with pytest.raises(InvalidArgumentError):
        etcd.txn([Compare(p, "mod", "==", b"not an int")], [])
    with pytest.raises(InvalidArgumentError):
        etcd.txn([Compare(p, "value", "==", 3)], [])
    with pytest.raises(InvalidArgumentError):
        etcd.txn([], [Put("a str key", b"v")])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        etcd.range_prefix(p, page_size=0)
    with pytest.raises(InvalidArgumentError):
        etcd.watch_prefix(p, -1)
    with pytest.raises(InvalidArgumentError, match="key is not provided"):
        etcd.txn([], [Put(b"", b"v")])


def test_max_txn_ops_is_the_clusters_own_setting(etcd_cluster) -> None:
    cluster = etcd_cluster(1, extra=("--max-txn-ops", "4"))
    with EtcdAdapter(cluster.endpoints, timeout=5.0) as a:
        assert a.txn([], [Put(b"/k%d" % i, b"x") for i in range(4)]).succeeded
        with pytest.raises(TooLargeError):
            a.txn([], [Put(b"/k%d" % i, b"x") for i in range(5)])


def test_a_lone_member_is_used_again_once_it_is_back(etcd_cluster) -> None:
    cluster = etcd_cluster(1)
    with EtcdAdapter(cluster.endpoints, timeout=1.0) as a:
        rev = a.txn([], [Put(b"/k", b"1")]).revision
        cluster.kill(0)
        with pytest.raises(UnavailableError) as err:
            a.get(b"/k")
        assert err.value.data["reason"] == "unreachable"
        assert cluster.endpoints[0] in err.value.message
        cluster.restart(0)
        kv, _ = a.get(b"/k")  # python3-etcd3's own client refuses its endpoint for 300 s here
        assert kv is not None and kv.mod_revision == rev
