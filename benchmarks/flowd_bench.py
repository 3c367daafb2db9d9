"""flowd workloads through its client: one daemon per store size, measured in turn.

A session starts flowd (strict durability) on a copy of the generated store
and measures, in this order so that writes do not change what reads see:
plain reads, cached-client reads, async pipelined reads, snapshot cost, then
durable add_flow latency with the journal bytes each write costs. Flows added
by a write run are deleted again (one batch, untimed) so every run sees the
same store size. The worker factories at the bottom are what the
multi-process throughput runs execute in their own processes.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flowd_client import FlowClient

from .daemon import Flowd
from .datagen import Dataset, sample_flow
from .results import Results
from .settings import Settings
from .workloads import Sample, median_sample, repeat, summarize, time_ops

ASYNC_IN_FLIGHT = 64
BATCH_MAX = 1000
ASYNC_SKIP = "async client: skipped (flowd_client.AsyncFlowClient is not importable yet)"


def session(ds: Dataset, st: Settings, work: Path, res: Results,
            guard: Callable[[str, Callable[[], None]], None]) -> None:
    """All single-daemon workloads at one store size; each guarded on its own."""
    data_dir = work / f"flowd-{ds.size}"
    ds.copy_to(data_dir)
    with Flowd(data_dir, "strict") as d:
        n = ds.size
        guard(f"flowd reads @{n}", lambda: measure_reads(d, ds, st, res))
        guard(f"flowd cached reads @{n}", lambda: measure_cached(d, ds, st, res))
        guard(f"flowd async reads @{n}", lambda: measure_async(d, ds, st, res))
        guard(f"flowd snapshot cost @{n}", lambda: measure_snapshot(d, ds, st, res))
        guard(f"flowd durable writes @{n}", lambda: measure_writes(d, ds, st, res))


def measure_reads(d: Flowd, ds: Dataset, st: Settings, res: Results) -> None:
    ids, k = ds.ids, len(ds.ids)
    with d.client() as c:
        if c.get_flow_by_id(ids[0]) is None:
            raise RuntimeError(f"get_flow_by_id({ids[0]!r}) returned None on a loaded store")
        s = repeat(st.runs, lambda r: time_ops(lambda i: c.get_flow_by_id(ids[i % k]),
                                               st.read_ops, start=r * st.read_ops))
    res.put("read", "flowd", ds.size, s)


def measure_cached(d: Flowd, ds: Dataset, st: Settings, res: Results) -> None:
    """FlowClient(cache=True): the mirror's load time, then reads from the mirror."""
    ids, k = ds.ids, len(ds.ids)
    t0 = time.perf_counter()
    c = d.client(cache=True)
    try:
        res.put("cache_load", "flowd cached", ds.size, time.perf_counter() - t0)
        if c.get_flow_by_id(ids[0]) is None:
            raise RuntimeError("cached get_flow_by_id returned None on a loaded store")
        ops = st.read_ops * 25
        s = repeat(st.runs, lambda r: time_ops(lambda i: c.get_flow_by_id(ids[i % k]), ops))
    finally:
        c.close()
    res.put("read", "flowd cached", ds.size, s)


def async_client_class() -> Any:
    """flowd_client.AsyncFlowClient, or None while it does not exist."""
    try:
        from flowd_client import AsyncFlowClient
    except ImportError:
        return None
    return AsyncFlowClient


def measure_async(d: Flowd, ds: Dataset, st: Settings, res: Results) -> None:
    """Many get_flow requests in flight on one socket (asyncio.gather of workers)."""
    cls = async_client_class()
    if cls is None:
        res.skip(ASYNC_SKIP)
        return
    total = st.read_ops * 4
    s = repeat(st.runs, lambda r: asyncio.run(_async_reads(cls, d.data_dir, ds.ids, total)))
    res.put("read", "flowd async", ds.size, s)


async def _async_reads(cls: Any, data_dir: Path, ids: tuple[str, ...], total: int) -> Sample:
    c = cls(data_dir, timeout=60.0)
    try:
        await c.ping()
        lat: list[float] = []
        per = max(1, total // ASYNC_IN_FLIGHT)
        k = len(ids)

        async def one_worker(w: int) -> None:
            for i in range(per):
                t = time.perf_counter()
                await c.get_flow_by_id(ids[(w * per + i) % k])
                lat.append(time.perf_counter() - t)
        t0 = time.perf_counter()
        await asyncio.gather(*(one_worker(w) for w in range(ASYNC_IN_FLIGHT)))
        return summarize(lat, time.perf_counter() - t0)
    finally:
        await c.close()


def measure_snapshot(d: Flowd, ds: Dataset, st: Settings, res: Results) -> None:
    """save(force=True), then the daemon's own account of that snapshot."""
    secs: list[float] = []
    sizes: list[int] = []
    with d.client() as c:
        for _ in range(max(1, st.runs)):
            before = c.stats()["snapshot"]["count"]
            if c.save(force=True) is not True:
                raise RuntimeError("save(force=True) did not return True")
            snap = c.stats()["snapshot"]
            if snap["count"] <= before:
                raise RuntimeError(f"save(force=True) returned but snapshot count stayed "
                                   f"{snap['count']}")
            secs.append(snap["last_seconds"])
            sizes.append(snap["last_bytes"])
    res.put("snapshot", "flowd", ds.size, statistics.median(secs))
    res.put("snapshot_bytes", "flowd", ds.size, statistics.median(sizes))


def measure_writes(d: Flowd, ds: Dataset, st: Settings, res: Results) -> None:
    """Durable add_flow (strict): latency, and journal bytes per write from stats."""
    with d.client() as c:
        runs = [_write_run(c, st, r) for r in range(max(1, st.runs))]
    res.put("write", "flowd strict", ds.size, median_sample([s for s, _ in runs]))
    res.put("journal_bytes", "flowd strict", ds.size, statistics.median(b for _, b in runs))


def _write_run(c: FlowClient, st: Settings, run: int) -> tuple[Sample, float]:
    before = c.stats()
    added: list[str] = []
    sample = time_ops(lambda i: added.append(c.add_flow(*sample_flow(i))), st.write_ops,
                      warmup=20, start=run * 100_000)
    after = c.stats()
    writes = after["requests"]["add_flow"] - before["requests"].get("add_flow", 0)
    grown = after["journal_appended_bytes"] - before["journal_appended_bytes"]
    delete_all(c, added)
    return sample, grown / max(1, writes)


def delete_all(c: FlowClient, flow_ids: list[str]) -> None:
    """Undo a write run in a few atomic batches (untimed)."""
    for i in range(0, len(flow_ids), BATCH_MAX):
        chunk = flow_ids[i:i + BATCH_MAX]
        c.commit_batch([{"op": "delete_flow", "args": {"flow_id": f}} for f in chunk])


# ---------------------------------------------------------------- worker factories


def reader(data_dir: str, ids: tuple[str, ...]) -> tuple[Callable[[int], object],
                                                         Callable[[], None]]:
    c = FlowClient(data_dir, timeout=120.0)
    k = len(ids)
    return (lambda i: c.get_flow_by_id(ids[i % k])), c.close


def writer(data_dir: str) -> tuple[Callable[[int], object], Callable[[], None]]:
    c = FlowClient(data_dir, timeout=120.0)
    return (lambda i: c.add_flow(*sample_flow(i))), c.close


def mixed(data_dir: str, ids: tuple[str, ...],
          write_every: int) -> tuple[Callable[[int], object], Callable[[], None]]:
    """One add_flow every ``write_every`` ops, get_flow_by_id otherwise."""
    c = FlowClient(data_dir, timeout=120.0)
    k = len(ids)

    def op(i: int) -> object:
        if i % write_every == 0:
            return c.add_flow(*sample_flow(i))
        return c.get_flow_by_id(ids[i % k])
    return op, c.close
