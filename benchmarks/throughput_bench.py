"""Durable writes/s from 1 and N writer processes, and an N-process mixed load.

Every run starts from a fresh copy of the same small store (so earlier runs'
writes do not grow it) and each process has its own connection, as separate
tools would. flowd's N-vs-1 ratio is the group-commit check: N writers
should share fsyncs, not queue behind one another's. Results are keyed by
process count instead of store size.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from .daemon import Flowd
from .datagen import Dataset
from .peers import redis_peer, sqlite_peer
from .results import Results
from .settings import Settings
from .workloads import Sample, median_sample, throughput

WRITE_EVERY = 5  # mixed load: 1 write in 5 ops = 80% reads
FLOWD_MODES = ("strict", "relaxed", "none")


def _runs(st: Settings, fn: Callable[[int], Sample]) -> Sample:
    return median_sample([fn(r) for r in range(max(1, st.runs))])


def flowd_writes(mode: str, ds: Dataset, st: Settings, work: Path, res: Results) -> None:
    for procs in (1, st.procs):
        commits: list[float] = []

        def one(r: int, procs: int = procs, commits: list[float] = commits) -> Sample:
            data_dir = work / f"tp-{mode}-{procs}-{r}"
            ds.copy_to(data_dir)
            with Flowd(data_dir, mode) as d:
                s = throughput("benchmarks.flowd_bench:writer", (str(data_dir),), procs,
                               st.seconds)
                commits.append(d.stats().get("records_per_commit", 0.0))
            shutil.rmtree(data_dir, ignore_errors=True)
            return s
        res.put("tp_write", f"flowd {mode}", procs, _runs(st, one))
        res.put("records_per_commit", f"flowd {mode}", procs, sorted(commits)[len(commits) // 2])


def redis_writes(binary: str, fsync: str, ds: Dataset, st: Settings, work: Path,
                 res: Results) -> None:
    for procs in (1, st.procs):
        def one(r: int, procs: int = procs) -> Sample:
            with redis_peer.RedisServer(binary, fsync, work) as srv:
                srv.fill(ds)
                return throughput("benchmarks.peers.redis_peer:writer", (srv.socket,), procs,
                                  st.seconds)
        res.put("tp_write", f"redis {fsync}", procs, _runs(st, one))


def sqlite_writes(ds: Dataset, st: Settings, work: Path, res: Results) -> None:
    template = sqlite_peer.create(work / f"tp-template-{ds.size}.db", ds)
    for procs in (1, st.procs):
        def one(r: int, procs: int = procs) -> Sample:
            db = sqlite_peer.fresh_copy(template, work / "tp-sqlite.db")
            return throughput("benchmarks.peers.sqlite_peer:writer", (str(db),), procs,
                              st.seconds)
        res.put("tp_write", "sqlite FULL", procs, _runs(st, one))


def flowd_mixed(mode: str, ds: Dataset, st: Settings, work: Path, res: Results) -> None:
    def one(r: int) -> Sample:
        data_dir = work / f"mixed-{mode}-{r}"
        ds.copy_to(data_dir)
        with Flowd(data_dir, mode):
            s = throughput("benchmarks.flowd_bench:mixed", (str(data_dir), ds.ids, WRITE_EVERY),
                           st.procs, st.seconds)
        shutil.rmtree(data_dir, ignore_errors=True)
        return s
    res.put("tp_mixed", f"flowd {mode}", st.procs, _runs(st, one))


def redis_mixed(binary: str, fsync: str, ds: Dataset, st: Settings, work: Path,
                res: Results) -> None:
    def one(r: int) -> Sample:
        with redis_peer.RedisServer(binary, fsync, work) as srv:
            srv.fill(ds)
            return throughput("benchmarks.peers.redis_peer:mixed",
                              (srv.socket, ds.ids, WRITE_EVERY), st.procs, st.seconds)
    res.put("tp_mixed", f"redis {fsync}", st.procs, _runs(st, one))


def sqlite_mixed(ds: Dataset, st: Settings, work: Path, res: Results) -> None:
    template = sqlite_peer.create(work / f"mixed-template-{ds.size}.db", ds)

    def one(r: int) -> Sample:
        db = sqlite_peer.fresh_copy(template, work / "mixed-sqlite.db")
        return throughput("benchmarks.peers.sqlite_peer:mixed", (str(db), ds.ids, WRITE_EVERY),
                          st.procs, st.seconds)
    res.put("tp_mixed", "sqlite FULL", st.procs, _runs(st, one))
