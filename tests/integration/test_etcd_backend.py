"""Two flowd hosts on one etcd cluster: the etcd backend end to end.

Each test starts two real `flowd --backend etcd` processes on their own data
dirs (standing for two hosts) on a shared 3-member cluster, each test on a
key prefix of its own, and talks to them through the real client.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from awaiting import wait_for
from conftest import Daemon
from etcd_cluster import SKIP_LINE, EtcdCluster, etcd_binary
from flowd_client import FlowClient
from flowd_client.errors import (
    CompactedError,
    ConflictError,
    FlowdError,
    TooLargeError,
    UnavailableError,
)
from seed_tool import SeedTool

from flowd.etcd_adapter import EtcdAdapter
from flowd.etcd_types import Put

_prefixes = itertools.count()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    if etcd_binary() is None:
        pytest.skip(SKIP_LINE)
    c = EtcdCluster(tmp_path_factory.mktemp("etcd3"), 3).start()
    yield c
    c.stop()


@pytest.fixture
def hosts(cluster: EtcdCluster, tmp_path: Path) -> Callable[..., list[Daemon]]:
    """``hosts(n)``: n flowd daemons on one fresh prefix of the cluster."""
    prefix = f"/flowd/test{next(_prefixes)}"
    made: list[Daemon] = []

    def make(n: int = 2, *, endpoints: list[str] | None = None) -> list[Daemon]:
        urls = ",".join(endpoints or cluster.endpoints)
        for _ in range(n):
            d = Daemon(tmp_path / f"host{len(made)}", "--backend", "etcd",
                       "--etcd-endpoints", urls, "--etcd-prefix", prefix)
            made.append(d)
            d.start()
        return made[-n:]
    yield make
    for d in made:
        d.kill()




def wait_until(check: Callable[[], object], timeout: float = 20.0) -> object:
    return wait_for(check, timeout=timeout, what=repr(check))


def adds(watch: Iterator, n: int) -> list:
    """The next ``n`` add_flow changes of a watch (an add also makes its flow current)."""
    out = [c for c in itertools.islice((c for c in watch if c.op == "add_flow"), n)]
    watch.close()
    return out


def test_a_write_through_one_host_is_seen_through_the_other(hosts) -> None:
    a, b = hosts(2)
    with a.client() as ca, b.client() as cb:
        fid = ca.add_flow("shared", [{"step": 1}])
        flow = ca.get_flow_by_id(fid)
        seen = wait_until(lambda: cb.get_flow_by_id(fid))
        assert seen.name == "shared" and seen.revision == flow.revision
        assert wait_until(lambda: cb.get_current_flow_id() == fid)
        stats = cb.stats()
        assert stats["backend"]["kind"] == "etcd" and stats["backend"]["unavailable_since"] is None


def test_a_stale_if_revision_on_the_other_host_fails(hosts) -> None:
    a, b = hosts(2)
    with a.client() as ca, b.client() as cb:
        fid = ca.add_flow("cas")
        old = wait_until(lambda: cb.get_flow_by_id(fid)).revision
        newer = ca.update_flow(fid, name="moved", if_revision=old)
        assert newer.revision > old
        # B may not have seen A's update yet: etcd's compare decides, not B's mirror
        with pytest.raises(ConflictError):
            cb.update_flow(fid, name="lost", if_revision=old)
        got = cb.update_flow(fid, name="won", if_revision=newer.revision)
        assert got.revision > newer.revision
        assert wait_until(lambda: ca.get_flow_by_id(fid).name == "won")


def test_watch_on_one_host_sees_the_other_and_resumes(hosts, cluster: EtcdCluster) -> None:
    a, b = hosts(2)
    with a.client() as ca, b.client() as cb, EtcdAdapter(cluster.endpoints) as other:
        start = cb.ping()["revision"]
        ids = []
        for i in range(5):  # another prefix's writes between: revisions skip
            ids.append(ca.add_flow(f"w{i}"))
            other.txn([], [Put(b"/elsewhere/k", b"%d" % i)])
        got = adds(cb.watch(since=start, timeout=10.0), 5)
        assert [c.flow_id for c in got] == ids
        revs = [c.revision for c in got]
        assert revs == sorted(set(revs)) and revs[-1] - revs[0] > 4  # etcd's: not by one
        # resume from the middle: only what came after it
        rest = adds(cb.watch(since=revs[2], timeout=10.0), 2)
        assert [c.revision for c in rest] == revs[3:]


def test_current_flow_rules_hold_across_hosts(hosts) -> None:
    a, b = hosts(2)
    with a.client() as ca, b.client() as cb:
        first = ca.add_flow("first")
        second = cb.add_flow("second")  # computed on B's mirror, checked by etcd
        assert wait_until(lambda: ca.get_current_flow_id() == second)
        assert ca.delete_flow(second)
        # the first remaining flow becomes current, on both hosts
        assert ca.get_current_flow_id() == first
        assert wait_until(lambda: cb.get_current_flow_id() == first)
        third = cb.add_flow("third")
        assert wait_until(lambda: ca.get_current_flow_id() == third)


def test_a_batch_is_one_revision_and_a_too_big_one_is_refused(hosts) -> None:
    (a,) = hosts(1)
    with a.client() as c:
        with c.batch() as b:
            for i in range(3):
                b.add_flow(f"b{i}")
        revs = {f.revision for f in c.get_all_flows().values()}
        assert len(revs) == 1
        before = c.ping()["revision"]
        with pytest.raises(TooLargeError, match="max-txn-ops"):
            with c.batch() as b:
                for i in range(130):
                    b.add_flow(f"many{i}")
        with pytest.raises(TooLargeError):  # etcd's --max-request-bytes (1.5 MiB)
            c.add_flow("huge", [{"blob": "x" * (2 << 20)}])
        assert c.ping()["revision"] == before and len(c.get_all_flows()) == 3


def test_etcd_down_refuses_writes_in_time_serves_reads_and_recovers(etcd_cluster,
                                                                     tmp_path: Path) -> None:
    one = etcd_cluster(1)
    d = Daemon(tmp_path / "solo", "--backend", "etcd", "--etcd-endpoints",
               ",".join(one.endpoints), "--etcd-prefix", "/flowd/down").start()
    try:
        with d.client(timeout=5.0) as c:
            fid = c.add_flow("kept")
            one.kill(0)
            t0 = time.monotonic()
            with pytest.raises(UnavailableError):
                c.add_flow("refused")
            assert time.monotonic() - t0 < 5.0 + 1.0  # within the client's timeout
            assert c.get_flow_by_id(fid).name == "kept"  # reads go on from the mirror
            assert c.stats()["backend"]["unavailable_since"] is not None
            one.restart(0)
            # the daemon catches up by itself: a write goes through again
            fid2 = wait_until(lambda: _try_add(c, "after"), timeout=30.0)
            assert c.get_flow_by_id(fid2).name == "after"
            assert c.stats()["backend"]["unavailable_since"] is None
            assert sorted(f.name for f in c.get_all_flows().values()) == ["after", "kept"]
    finally:
        d.kill()


def _try_add(c, name: str) -> str | None:
    try:
        return c.add_flow(name)
    except UnavailableError:
        return None


def _try_set_current(c, flow_id: str) -> bool:
    try:
        return bool(c.set_current(flow_id))
    except UnavailableError:
        return False


class ChainWriter(threading.Thread):
    """One compare-and-set chain: plan n+1 written only over the revision that holds
    n. Every write acknowledged is recorded; after an error the flow is read again
    (a write that timed out may have landed) and the chain goes on from what is
    there, through the next host if this one is gone."""

    def __init__(self, name: str, hosts: list[Daemon], until: float) -> None:
        super().__init__(name=name, daemon=True)
        self.hosts, self.until = hosts, until
        self.acked: list[tuple[int, int]] = []  # (n, revision)
        self.fid: str | None = None
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.failure = exc

    def _client(self) -> FlowClient:
        live = [h for h in self.hosts if h.proc is not None and h.proc.poll() is None]
        return live[0].client(timeout=3.0)

    def _run(self) -> None:
        c = self._client()
        self.fid = c.add_flow(self.name, [{"n": 0}])
        flow = c.get_flow_by_id(self.fid)
        n, rev = 0, flow.revision
        self.acked.append((0, rev))
        while time.monotonic() < self.until:
            try:
                got = c.update_flow(self.fid, plans=[{"n": n + 1}], if_revision=rev)
                n, rev = n + 1, got.revision
                self.acked.append((n, rev))
                continue
            except ConflictError:
                pass
            except (UnavailableError, OSError, TimeoutError):
                c.close()
                c = self._client()
            except FlowdError:
                c.close()
                c = self._client()
            try:
                flow = c.get_flow_by_id(self.fid)
                n, rev = flow.plans[0]["n"], flow.revision
            except FlowdError:
                time.sleep(0.05)
        c.close()


class FeedReader(threading.Thread):
    """Every change of one host's feed from ``since``, until stopped (or the host dies)."""

    def __init__(self, host: Daemon, since: int) -> None:
        super().__init__(daemon=True)
        self.host, self.since = host, since
        self.changes: list = []
        self.stop = threading.Event()

    def run(self) -> None:
        since = self.since
        try:
            with self.host.client(timeout=3.0) as c:
                while not self.stop.is_set():  # an idle watch ends: resume it from there
                    for change in c.watch(since=since, timeout=1.0):
                        self.changes.append(change)
                        since = change.revision
        except FlowdError:
            pass  # the host was killed


def test_concurrent_hosts_survive_a_member_and_a_host_killed(hosts, cluster: EtcdCluster) -> None:
    a, b = hosts(2)
    with b.client() as cb:
        start = cb.ping()["revision"]
    feeds = [FeedReader(a, start), FeedReader(b, start)]
    for f in feeds:
        f.start()
    until = time.monotonic() + 20.0
    writers = [ChainWriter(f"a{i}", [a, b], until) for i in range(2)]
    writers += [ChainWriter(f"b{i}", [b], until) for i in range(2)]
    for w in writers:
        w.start()
    def acked() -> int:
        return sum(len(w.acked) for w in writers)

    wait_until(lambda: all(len(w.acked) >= 5 for w in writers))  # the chains run, then
    cluster.kill(0)                                              # the failures
    before = acked()
    wait_until(lambda: acked() >= before + 20)  # going on without the member
    a.kill()
    for w in writers:
        w.join(timeout=60)
        assert not w.is_alive() and w.failure is None, w.failure
    cluster.restart(0)
    with b.client(timeout=5.0) as cb:
        final = cb.get_all_flows()
        last = max(rev for w in writers for _, rev in w.acked)
        wait_until(lambda: cb.ping()["revision"] >= last)
        for w in writers:
            # every acknowledged write is there: the chain's end is at least the last ack
            assert final[w.fid].plans[0]["n"] >= w.acked[-1][0]
            assert len(w.acked) > 3, "the chain did not run"
    feeds[1].stop.set()
    for f in feeds:
        f.join(timeout=30)
    for f in feeds:
        revs = [c.revision for c in f.changes]
        assert all(x <= y for x, y in itertools.pairwise(revs))  # a batch: same revision
        assert len({(c.revision, c.flow_id, c.op) for c in f.changes}) == len(f.changes)
    seen = feeds[1].changes
    for w in writers:
        chain = [c.flow.plans[0]["n"] for c in seen if c.flow_id == w.fid and c.flow
                 and c.op != "set_current"]
        # unbroken: each value once, in order, none skipped (a lost CAS would repeat one)
        assert chain == list(range(len(chain))), (w.name, chain)
        by_rev = {c.revision: c.flow.plans[0]["n"] for c in seen if c.flow_id == w.fid
                  and c.flow and c.op != "set_current"}
        for n, rev in w.acked:
            assert by_rev.get(rev) == n, (w.name, n, rev)
    # host A comes back on its data dir: its mirror is etcd's state, B's
    a.start()
    with a.client() as ca, b.client() as cb:
        want = {fid: (f.name, f.plans, f.revision) for fid, f in cb.get_all_flows().items()}
        got = {fid: (f.name, f.plans, f.revision) for fid, f in ca.get_all_flows().items()}
        assert got == want and ca.get_current_flow_id() == cb.get_current_flow_id()


def test_a_since_before_the_hosts_history_is_compacted(hosts) -> None:
    (a,) = hosts(1)
    with a.client() as ca:
        for i in range(3):
            ca.add_flow(f"old{i}")
    (b,) = hosts(1)  # joins later: its feed starts at the state it loaded
    with b.client() as cb:
        assert len(cb.get_all_flows()) == 3
        with pytest.raises(CompactedError):
            next(cb.watch(since=1, timeout=5.0))


def test_an_old_tool_rewriting_a_hosts_flows_json_is_merged_into_etcd(hosts) -> None:
    a, b = hosts(2)
    with a.client() as ca, b.client() as cb:
        keep = ca.add_flow("kept", [{"step": 1}])
        gone = ca.add_flow("gone")
        assert ca.save(force=True) is True  # A's flows.json holds both
        tool = SeedTool(a.data_dir)
        new = tool.add_flow("from-old-tool", [{"by": "tool"}])
        tool.rename(keep, "renamed-by-tool")
        assert tool.delete_flow(gone)
        tool.save()
        # merged on A by the one-host rules, written to etcd, so B has it too
        want = {keep: "renamed-by-tool", new: "from-old-tool"}
        assert wait_until(lambda: {f: x.name for f, x in cb.get_all_flows().items()} == want)
        assert {f: x.name for f, x in ca.get_all_flows().items()} == want
        assert ca.stats()["stray_merges"]


def test_a_host_whose_watch_fell_behind_compaction_reloads_the_whole_state(
        hosts, cluster: EtcdCluster) -> None:
    """B reaches etcd through member 0 only. While that member is down, A writes
    (and deletes) and the cluster compacts past B's watch; when the member is back,
    B's watch cannot resume, so B takes the whole state again and follows from there."""
    (a,) = hosts(1, endpoints=cluster.endpoints[1:])
    (b,) = hosts(1, endpoints=cluster.endpoints[:1])
    with a.client() as ca, b.client() as cb:
        old = ca.add_flow("old")
        wait_until(lambda: cb.get_flow_by_id(old))
        cluster.kill(0)
        try:
            # until the members left have a leader again (it may have been member 0),
            # writes are UNAVAILABLE; setting the current flow again is harmless to retry
            wait_until(lambda: _try_set_current(ca, old), timeout=30.0)
            new = ca.add_flow("new")
            assert ca.delete_flow(old)
            cluster.compact(ca.ping()["revision"])
        finally:
            cluster.restart(0)
        assert wait_until(lambda: set(cb.get_all_flows()) == {new}, timeout=30.0)
        assert cb.get_current_flow_id() == ca.get_current_flow_id()
        later = ca.add_flow("later")  # and B follows the watch again
        assert wait_until(lambda: cb.get_flow_by_id(later), timeout=30.0)
