"""Issue 4 through real daemons: the cached client, clients shared by threads and across
fork, paging."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from flowd_client import FlowClient, InvalidArgumentError, NotFoundError
from flowd_client import feed as feed_module
from flowd_client.protocol import DEFAULT_PAGE, MAX_BATCH_OPS
from store_probes import MISSING, revision, wait_until

# ------------------------------------------------------------------ cached client


def test_cached_reads_are_served_locally(daemon) -> None:
    with daemon.client() as plain, daemon.client(cache=True) as cached:
        ids = [cached.add_flow(f"c{i}", [{"i": i}]) for i in range(20)]
        reads = ("get_flow", "get_all_flows", "find_by_name", "get_current")
        before = {op: plain.stats()["requests"].get(op, 0) for op in reads}
        for _ in range(20):
            for i, fid in enumerate(ids):
                assert cached.get_flow_by_id(fid).plans == [{"i": i}]
            assert cached.get_flow_by_id(MISSING) is None
            assert list(cached.get_all_flows()) == ids
            assert [f.id for f in cached.find_by_name("c3")] == [ids[3]]
            assert cached.current_flow_id == ids[-1] and cached.get_current().id == ids[-1]
        after = {op: plain.stats()["requests"].get(op, 0) for op in reads}
        assert after == before
        assert cached.get_all_flows() == plain.get_all_flows()


def test_cached_read_your_writes(daemon) -> None:
    with daemon.client() as plain, daemon.client(cache=True) as cached:
        for i in range(20):
            other = plain.add_flow(f"other{i}")
            fid = cached.add_flow(f"mine{i}")
            # my write is visible at once, and so is everything committed before it
            assert cached.get_flow_by_id(fid).name == f"mine{i}"
            assert cached.get_flow_by_id(other) is not None
            assert cached.current_flow_id == fid
            f = cached.update_flow(fid, name=f"renamed{i}", if_revision=cached.get_flow_by_id(
                fid).revision)
            assert cached.get_flow_by_id(fid) == f
            assert [x.id for x in cached.find_by_name(f"renamed{i}")] == [fid]
            assert cached.find_by_name(f"mine{i}") == []
            cached.append_plan(fid, {"n": i})
            assert cached.get_flow_by_id(fid).plans == [{"n": i}]
            assert cached.set_current(other) is True and cached.current_flow_id == other
            assert cached.delete_flow(fid) is True and cached.get_flow_by_id(fid) is None
        assert cached.get_all_flows() == plain.get_all_flows()


def test_cached_sees_other_writes_within_bound(daemon) -> None:
    with daemon.client() as plain, daemon.client(cache=True) as cached:
        for i in range(10):
            fid = plain.add_flow(f"x{i}")
            wait_until(lambda fid=fid: cached.get_flow_by_id(fid), what="add visible")
            plain.update_flow(fid, name=f"y{i}")
            wait_until(lambda fid=fid, i=i: cached.get_flow_by_id(fid).name == f"y{i}",
                       what="update visible")
            wait_until(lambda fid=fid: cached.current_flow_id == fid, what="current visible")
            plain.delete_flow(fid)
            wait_until(lambda fid=fid: cached.get_flow_by_id(fid) is None,
                       what="delete visible")
        wait_until(lambda: cached.get_all_flows() == plain.get_all_flows(), what="same store")


def test_cached_client_resyncs_after_a_gap(make_daemon, monkeypatch) -> None:
    """Events lost on the way (what ZeroMQ does past the high-water mark) and history
    too short to fill the gap: the mirror must reload and converge."""
    d = make_daemon(None, "--history", "5").start()
    dropping = threading.Event()
    real_decode = feed_module.decode_event
    monkeypatch.setattr(feed_module, "decode_event",
                        lambda frames: None if dropping.is_set() else real_decode(frames))
    with d.client() as plain, d.client(cache=True) as cached:
        mirror = cached._mirror
        real_fill = mirror._fill
        mirror._fill = lambda seq: [] if dropping.is_set() else real_fill(seq)
        first = plain.add_flow("before")
        wait_until(lambda: cached.get_flow_by_id(first), what="first write")
        resyncs = mirror.resyncs
        dropping.set()
        lost = [plain.add_flow(f"lost{i}") for i in range(20)]
        time.sleep(0.2)
        assert cached.get_flow_by_id(lost[-1]) is None  # the mirror really missed them
        dropping.clear()
        last = plain.add_flow("after")
        wait_until(lambda: cached.get_flow_by_id(last), timeout=10, what="resync")
        assert mirror.resyncs > resyncs
        assert cached.get_all_flows() == plain.get_all_flows()
        assert cached.current_flow_id == last
        again = plain.add_flow("still following")
        wait_until(lambda: cached.get_flow_by_id(again), what="following after resync")


def test_cached_reload_resyncs(daemon) -> None:
    with daemon.client() as plain, daemon.client(cache=True) as cached:
        ids = [plain.add_flow(f"r{i}") for i in range(5)]
        cached._mirror.reload()
        assert list(cached.get_all_flows()) == ids
        assert cached._mirror.revision == revision(plain)


# ------------------------------------------------------------------ threads, fork


@pytest.mark.parametrize("cache", [False, True])
def test_client_shared_by_8_threads(daemon, cache: bool) -> None:
    with daemon.client(cache=cache) as shared:
        log = shared.add_flow("log")

        def work(t: int) -> list[str]:
            mine = []
            for i in range(15):
                fid = shared.add_flow(f"t{t}-{i}", [{"t": t}])
                mine.append(fid)
                got = shared.get_flow_by_id(fid)
                assert got is not None and got.name == f"t{t}-{i}"
                shared.append_plan(log, {"t": t, "i": i})
                if i % 5 == 0:
                    shared.delete_flow(mine.pop(0))
            return mine
        with ThreadPoolExecutor(8) as ex:
            kept = [fid for ids in ex.map(work, range(8)) for fid in ids]
        assert len(set(kept)) == len(kept) == 8 * 12
        flows = shared.get_all_flows()
        assert set(flows) == {log, *kept}
        plans = flows[log].plans
        assert sorted((p["t"], p["i"]) for p in plans) == [(t, i) for t in range(8)
                                                           for i in range(15)]


def child_main(c: FlowClient, parent_flow: str, w: int) -> int:
    fid = c.add_flow("from child")
    flows = c.get_all_flows()
    ok = fid in flows and parent_flow in flows and c.get_flow_by_id(fid).name == "from child"
    os.write(w, json.dumps({"fid": fid, "ok": ok}).encode())
    c.close()
    return 0 if ok else 1


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("cache", [False, True])
def test_client_survives_fork(daemon, cache: bool) -> None:
    c = daemon.client(cache=cache)
    try:
        parent_flow = c.add_flow("parent before fork")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: never return into pytest
            code = 2
            try:
                os.close(r)
                code = child_main(c, parent_flow, w)
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                os.write(w, json.dumps({"error": repr(exc)}).encode())
            finally:
                os._exit(code)
        os.close(w)
        mine = [c.add_flow(f"parent{i}") for i in range(10)]  # the parent goes on meanwhile
        deadline = time.monotonic() + 60
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("forked child hung")
            time.sleep(0.02)
        report = json.loads(os.read(r, 65536) or b"{}")
        os.close(r)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, report
        flows = wait_until(lambda: (f := c.get_all_flows()) and report["fid"] in f and f,
                           what="child's write in the parent")
        assert set(mine) <= set(flows) and parent_flow in flows
        assert c.add_flow("parent after") in c.get_all_flows()
    finally:
        c.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_cached_client_in_forked_child_follows_changes(daemon) -> None:
    """A child that only reads (current_flow_id included) still follows the parent's writes."""
    c = daemon.client(cache=True)
    try:
        a = c.add_flow("a")
        c.add_flow("b")
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    if c.current_flow_id == a and c.find_by_name("after fork"):
                        code = 0
                        break
                    time.sleep(0.01)
            finally:
                os._exit(code)
        c.set_current(a)
        c.append_plan(a, {"after": True})
        with daemon.client() as other:
            other.add_flow("after fork")
            other.set_current(a)
        _, status = os.waitpid(pid, 0)  # the child gives up after 20 s on its own
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        c.close()


# ------------------------------------------------------------------ paging


def test_paging_follows_cursors_at_one_revision(client: FlowClient) -> None:
    with client.batch() as b:
        for i in range(35):
            b.add_flow(f"p{i}")
    ids = b.results
    assert ids is not None
    conn = client._connection
    page, _ = conn.request("get_all_flows", {"limit": 10}, False)
    rev0, got, pages = page["revision"], [], 0
    client.add_flow("added between pages")  # later pages still show the first revision
    client.delete_flow(ids[20])
    for _ in range(100):
        pages += 1
        got += [f["id"] for f in page["flows"]]
        assert page["revision"] == rev0 and page["current_flow_id"] == ids[-1]
        if page["next"] is None:
            break
        cursor = page["next"]
        page, _ = conn.request("get_all_flows", {"cursor": cursor, "limit": 10}, False)
    assert got == ids and pages == 4
    with pytest.raises(NotFoundError, match="cursor"):
        conn.request("get_all_flows", {"cursor": cursor}, False)  # used up
    with pytest.raises(NotFoundError):
        conn.request("get_all_flows", {"cursor": "nope"}, False)
    with pytest.raises(InvalidArgumentError):
        conn.request("get_all_flows", {"limit": 0}, False)
    assert len(client.get_all_flows()) == 35


def test_get_all_flows_larger_than_one_page(daemon, client: FlowClient) -> None:
    ids: list[str] = []
    while len(ids) <= DEFAULT_PAGE:
        with client.batch() as b:
            for i in range(MAX_BATCH_OPS):
                b.add_flow(f"n{len(ids) + i}")
        ids += b.results or []
    assert list(client.get_all_flows()) == ids
    with daemon.client(cache=True) as cached:  # the mirror's load pages too
        assert list(cached.get_all_flows()) == ids
        assert cached.current_flow_id == ids[-1]


def _pages(conn, **args) -> list[dict]:
    """Every page of one listing, following its cursor."""
    page, _ = conn.request("get_all_flows", args, False)
    pages = [page]
    for _ in range(10_000):
        if page["next"] is None:
            return pages
        page, _ = conn.request("get_all_flows", {**args, "cursor": page["next"]}, False)
        pages.append(page)
    raise AssertionError("the listing never ended")


def test_json_pages_hold_the_decoded_pages_flows_at_one_revision(client: FlowClient) -> None:
    """A JSON page is the daemon's lines joined: what it lists is what the decoded
    pages list (values and order), and from the first page's revision on."""
    with client.batch() as b:
        for i in range(35):
            b.add_flow(f"p{i}", [{"n": i, "x": 1.5, "t": "한글 \u2028"}], extra={"k": [i]})
    conn = client._connection
    decoded = [f for p in _pages(conn, limit=10) for f in p["flows"]]
    first, _ = conn.request("get_all_flows", {"json": True, "limit": 10}, False)
    client.add_flow("added between pages")
    client.delete_flow(decoded[20]["id"])
    rest = _pages(conn, json=True, limit=10, cursor=first["next"])
    pages = [first, *rest]
    assert all("flows" not in p and p["revision"] == first["revision"] for p in pages)
    listed = [f for p in pages for f in json.loads(p["flows_json"]).values()]
    # the flow deleted between pages is still listed, the one added is not
    assert listed == decoded and len(pages) == 4
    now = client.read_store().flows  # a fresh listing (JSON pages) sees both writes
    assert decoded[20]["id"] not in now and list(now.values())[-1].name == "added between pages"


def test_json_pages_are_bounded_in_bytes(make_daemon) -> None:
    d = make_daemon(None, "--reply-page-bytes", "4K")
    d.start()
    with d.client() as c:
        with c.batch() as b:
            for i in range(60):
                b.add_flow(f"f{i}", [{"pad": "x" * 300}])
        c.add_flow("big", [{"pad": "y" * 9000}])  # alone over the bound: a page of its own
        pages = _pages(c._connection, json=True)
        sizes = [(len(p["flows_json"]), len(json.loads(p["flows_json"]))) for p in pages]
        assert all(size <= 4096 + 2 or n == 1 for size, n in sizes), sizes
        assert sum(n for _, n in sizes) == 61 and (max(s for s, _ in sizes) > 9000)
        assert len(c.get_all_flows()) == 61
