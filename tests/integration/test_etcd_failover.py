"""The etcd adapter on a real 3-member cluster while members are SIGKILLed.

A writer keeps a compare-and-set chain on one key (value i is written only
over the revision of value i-1), as flowd's backend will: every write that
got a success reply must be in the key's history, the history must be
0, 1, 2, ... exactly once each, and a write that failed "maybe applied" is
settled by reading the key, never by sending it again blindly.
"""

from __future__ import annotations

import threading
import time

import pytest
from etcd_cluster import EtcdCluster
from flowd_client.errors import FlowdError, UnavailableError

from flowd.etcd_adapter import EtcdAdapter
from flowd.etcd_types import Compare, Get, Put

KEY = b"/chain/flow_1"


class ChainWriter:
    def __init__(self, adapter: EtcdAdapter) -> None:
        self.a = adapter
        self.n, self.rev = 0, 0
        self.acked: list[tuple[int, int]] = []
        self.ambiguous = 0
        self.unexpected: list[object] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self.step()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.unexpected.append(exc)

    def step(self) -> None:
        try:
            r = self.a.txn([Compare.mod_revision(KEY, self.rev)],
                           [Put(KEY, b"%d" % self.n)], [Get(KEY)])
        except UnavailableError as exc:
            if exc.data.get("maybe_applied"):
                self.ambiguous += 1
                self._settle()
            return
        if not r.succeeded:
            self.unexpected.append(("conflict", self.n, r))
            self.stop.set()
            return
        self.acked.append((self.n, r.revision))
        self.n, self.rev = self.n + 1, r.revision

    def _settle(self) -> None:
        """Did the write of n happen? Read until etcd answers (it must, within 30 s)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                kv, _ = self.a.get(KEY)
            except UnavailableError:
                continue
            if kv is not None and kv.mod_revision != self.rev:
                assert kv.value == b"%d" % self.n, (kv, self.n)
                self.n, self.rev = self.n + 1, kv.mod_revision
            return
        raise AssertionError("etcd did not answer a read within 30 s")

    def wait_acked(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < count and not self.unexpected and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not self.unexpected, self.unexpected
        assert len(self.acked) >= count, f"only {len(self.acked)} writes acknowledged"


def history(adapter: EtcdAdapter, up_to: int) -> list[tuple[bytes, int]]:
    """Every value the key had, with its revision, from the beginning to ``up_to``."""
    out: list[tuple[bytes, int]] = []
    w = adapter.watch_prefix(KEY, 1)
    try:
        while not out or out[-1][1] < up_to:
            out.extend((e.value, e.mod_revision) for e in next(w).events)
    finally:
        w.cancel()
    return out


def check_chain(adapter: EtcdAdapter, writer: ChainWriter) -> None:
    hist = history(adapter, writer.rev)
    assert [v for v, _ in hist] == [b"%d" % i for i in range(writer.n)]
    revs = dict(hist)
    for n, rev in writer.acked:
        assert revs[b"%d" % n] == rev


def victim_first(cluster: EtcdCluster, which: str) -> tuple[int, list[str]]:
    leader = cluster.leader()
    victim = leader if which == "leader" else (leader + 1) % 3
    urls = cluster.endpoints
    return victim, [urls[victim]] + [u for i, u in enumerate(urls) if i != victim]


@pytest.mark.parametrize("which", ["leader", "follower"])
def test_writes_go_on_while_the_member_in_use_is_killed(etcd_cluster, which: str) -> None:
    cluster = etcd_cluster(3)
    victim, urls = victim_first(cluster, which)
    with EtcdAdapter(urls, timeout=5.0) as a:
        writer = ChainWriter(a)
        writer.thread.start()
        writer.wait_acked(20)
        cluster.kill(victim)
        before = len(writer.acked)
        writer.wait_acked(before + 50)
        writer.stop.set()
        writer.thread.join(30)
        assert not writer.unexpected, writer.unexpected
        assert a.endpoint != urls[0]
        assert writer.ambiguous <= 2
        check_chain(a, writer)
    cluster.restart(victim)
    with EtcdAdapter([urls[0]], timeout=10.0) as back:
        kv, _ = back.get(KEY)  # linearizable through the restarted member: it caught up
        assert kv is not None and kv.value == b"%d" % (writer.n - 1)


def test_a_watch_follows_its_member_being_killed(etcd_cluster) -> None:
    cluster = etcd_cluster(3)
    victim, urls = victim_first(cluster, "leader")
    with EtcdAdapter(urls, timeout=10.0) as wa, EtcdAdapter(urls[1:], timeout=5.0) as a:
        w = wa.watch_prefix(KEY, a.current_revision() + 1)
        seen: list[tuple[bytes, int]] = []
        errors: list[BaseException] = []

        def follow() -> None:
            try:
                for batch in w:
                    seen.extend((e.value, e.mod_revision) for e in batch.events)
            except FlowdError as exc:
                errors.append(exc)
        t = threading.Thread(target=follow, daemon=True)
        t.start()
        writer = ChainWriter(a)
        writer.thread.start()
        writer.wait_acked(30)
        cluster.kill(victim)
        writer.wait_acked(len(writer.acked) + 50)
        writer.stop.set()
        writer.thread.join(30)
        deadline = time.monotonic() + 30
        while (not seen or seen[-1][1] < writer.rev) and time.monotonic() < deadline:
            time.sleep(0.01)
        w.cancel()
        t.join(10)
        assert not errors and not writer.unexpected
        assert [v for v, _ in seen] == [b"%d" % i for i in range(writer.n)]
        assert wa.endpoint != urls[0]


def test_all_members_down_is_unavailable_within_the_timeout_then_recovers(etcd_cluster) -> None:
    cluster = etcd_cluster(3)
    with EtcdAdapter(cluster.endpoints, timeout=2.0) as a:
        rev = a.txn([], [Put(KEY, b"0")]).revision
        for i in range(3):
            cluster.kill(i)
        # the first write may go out on a connection whose member just died
        # ("maybe applied"); then every member is seen refusing connections
        calls = (lambda: a.txn([], [Put(KEY, b"1")]), lambda: a.txn([], [Put(KEY, b"1")]),
                 lambda: a.get(KEY))
        for n, call in enumerate(calls):
            start = time.monotonic()
            with pytest.raises(UnavailableError) as err:
                call()
            assert time.monotonic() - start < 2.0 + 1.0
            if n:
                assert err.value.data["maybe_applied"] is False
                assert set(err.value.data["endpoints"]) == set(cluster.endpoints)
                assert all(u in err.value.message for u in cluster.endpoints)
        for i in range(3):
            cluster.members[i].spawn(cluster._commands[i])
        cluster.wait_healthy()
        deadline = time.monotonic() + 30
        while True:  # the same adapter catches up by itself once etcd is back
            try:
                assert a.txn([Compare.mod_revision(KEY, rev)], [Put(KEY, b"1")]).succeeded
                break
            except UnavailableError:
                assert time.monotonic() < deadline, "adapter did not recover"


def test_quorum_lost_is_unavailable_within_the_timeout(etcd_cluster) -> None:
    cluster = etcd_cluster(3)
    leader = cluster.leader()
    survivor = (leader + 1) % 3
    with EtcdAdapter([cluster.endpoints[survivor]], timeout=3.0) as a:
        a.txn([], [Put(KEY, b"0")])
        for i in range(3):
            if i != survivor:
                cluster.kill(i)
        for call in (lambda: a.txn([], [Put(KEY, b"1")]), lambda: a.get(KEY)):
            start = time.monotonic()
            with pytest.raises(UnavailableError) as err:
                call()
            assert time.monotonic() - start < 3.0 + 1.0
            assert err.value.data["reason"] in ("no_leader", "timeout", "leader_changed")
