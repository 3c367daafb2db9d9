"""Single-client workloads on the peers, per store size, shaped like flowd's.

Same loop, same op counts and the same generated store as the flowd session:
reads of random existing ids, then durable writes of new flows that are
removed again afterwards (untimed) so every run sees the same size.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from .datagen import Dataset
from .peers import redis_peer, seed, sqlite_peer, zmq_echo
from .results import ANY_SIZE, Results
from .settings import Settings
from .workloads import Sample, repeat, time_ops


def redis_size(binary: str, ds: Dataset, st: Settings, work: Path, res: Results) -> None:
    """HGET on a filled hash; HSET latency with appendfsync always and everysec."""
    for fsync in ("always", "everysec"):
        with redis_peer.RedisServer(binary, fsync, work) as srv:
            srv.fill(ds)
            if fsync == "everysec":
                read, close = redis_peer.reader(srv.socket, ds.ids)
                res.put("read", "redis HGET", ds.size,
                        repeat(st.runs, lambda r, op=read: time_ops(op, st.read_ops)))
                close()
            res.put("write", f"redis {fsync}", ds.size, _redis_writes(srv, st))


def _redis_writes(srv: redis_peer.RedisServer, st: Settings) -> Sample:
    write, close = redis_peer.writer(srv.socket)
    r = srv.client()

    def one(run: int) -> Sample:
        first = run * 100_000
        s = time_ops(write, st.write_ops, warmup=20, start=first)
        ids = [redis_peer.doc_bytes(i)[0] for i in range(first, first + st.write_ops + 20)]
        r.hdel(redis_peer.HASH, *ids)
        return s
    try:
        return repeat(st.runs, one)
    finally:
        close()
        r.close()


def sqlite_size(ds: Dataset, st: Settings, work: Path, res: Results) -> None:
    """SELECT by primary key; INSERT with synchronous=FULL (one fsync'd commit each)."""
    db = sqlite_peer.create(work / f"sqlite-{ds.size}.db", ds)
    read, close = sqlite_peer.reader(str(db), ds.ids)
    res.put("read", "sqlite", ds.size,
            repeat(st.runs, lambda r: time_ops(read, st.read_ops)))
    close()
    write, close = sqlite_peer.writer(str(db))

    def one(run: int) -> Sample:
        first = run * 100_000
        s = time_ops(write, st.write_ops, warmup=20, start=first)
        sqlite_peer.delete_rows(str(db), first, st.write_ops + 20)
        return s
    res.put("write", "sqlite FULL", ds.size, repeat(st.runs, one))
    close()


def seed_saves(size: int, quick: bool) -> int:
    """How many add+save rounds to time: each rewrites the whole file (seconds at 100k)."""
    return max(3, min(10 if quick else 30, 30_000 // max(1, size)))


def seed_size(ds: Dataset, st: Settings, res: Results) -> None:
    """The seed in fresh interpreters: dict vs list reads, add+save, load (start), RSS."""
    reads = seed.run_job("reads", ds.path, st.read_ops)
    res.put("read", "seed dict", ds.size, seed.to_sample(reads["dict"]))
    res.put("read", "seed list search", ds.size, seed.to_sample(reads["list"]))
    writes = seed.run_job("writes", ds.path, seed_saves(ds.size, st.quick))
    add_save = seed.to_sample(writes["add_save"])
    res.put("write", "seed add+save", ds.size, add_save)
    res.put("snapshot", "seed save", ds.size, (add_save.p50_us or 0.0) / 1e6)
    res.put("snapshot_bytes", "seed save", ds.size, writes["bytes"])
    loads = [seed.run_job("load", ds.path) for _ in range(max(1, st.runs))]
    res.put("start", "seed load", ds.size, statistics.median(x["seconds"] for x in loads))
    res.put("rss", "seed process", ds.size, statistics.median(x["rss"] for x in loads))
    res.put("rss_base", "seed process", ds.size,
            statistics.median(x["rss_before"] for x in loads))


def echo(st: Settings, work: Path, res: Results) -> None:
    """The raw ROUTER/DEALER + msgpack round trip: the floor under every flowd call."""
    with zmq_echo.EchoServer(work) as srv:
        op, close = zmq_echo.client(srv.endpoint)
        try:
            res.put("read", "zmq echo", ANY_SIZE,
                    repeat(st.runs, lambda r: time_ops(op, st.read_ops)))
        finally:
            close()
