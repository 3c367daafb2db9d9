"""flowd over its life: cold start, memory, restart after a crash, writes under snapshots.

These need fresh daemons (a start is the thing measured, or a crash is part
of the setup), so they are kept apart from the per-size session.
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path

from .daemon import Flowd
from .datagen import Dataset, sample_flow
from .results import ANY_SIZE, Results
from .settings import Settings
from .workloads import summarize, throughput

SETTLE = 0.5
RESTART_WRITERS = 4


def cold_start(ds: Dataset, st: Settings, work: Path, res: Results) -> None:
    """Spawn-to-ready on a pre-made data dir (flows.json only), and the RSS once ready."""
    times: list[float] = []
    rss: list[int] = []
    peaks: list[int] = []
    for r in range(max(1, st.runs)):
        data_dir = work / f"cold-{ds.size}-{r}"
        ds.copy_to(data_dir)
        d = Flowd(data_dir, "strict")
        try:
            times.append(d.start())
            d.wait_indexed()
            time.sleep(SETTLE)  # let start-up work (a first snapshot, if any) finish
            rss.append(d.rss())
            peaks.append(d.peak_rss())
        finally:
            d.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    res.put("start", "flowd", ds.size, statistics.median(times))
    res.put("rss", "flowd", ds.size, statistics.median(rss))
    res.put("rss_peak", "flowd", ds.size, statistics.median(peaks))


def empty_rss(work: Path, res: Results) -> None:
    """The daemon's own footprint (interpreter, zmq, code) with no flows: per-flow baseline."""
    d = Flowd(work / "empty", "strict")
    try:
        d.start()
        time.sleep(SETTLE)
        res.put("rss_base", "flowd", ANY_SIZE, d.rss())
    finally:
        d.stop()


def restart_full_journal(ds: Dataset, st: Settings, work: Path, res: Results) -> None:
    """Write many flows with snapshots held off, SIGKILL, then time restarts of copies."""
    src = work / f"crashed-{ds.size}"
    ds.copy_to(src)
    d = Flowd(src, "relaxed", "--snapshot-interval", "3600")
    d.start()
    try:
        per = max(1, st.restart_writes // RESTART_WRITERS)
        throughput("benchmarks.flowd_bench:writer", (str(src),), RESTART_WRITERS, 3600.0,
                   max_ops=per)
        stats = d.stats()
    finally:
        d.kill()  # SIGKILL: no final snapshot, the journal holds everything since the load
    expected = stats["flows"]
    times: list[float] = []
    replayed = 0
    for r in range(max(1, st.runs)):
        copy = work / f"restart-{ds.size}-{r}"
        shutil.copytree(src, copy, ignore=shutil.ignore_patterns("*.sock"))
        again = Flowd(copy, "strict")
        try:
            times.append(again.start())
            after = again.stats()
        finally:
            again.kill()
        if after["flows"] != expected:
            raise RuntimeError(f"restart lost flows: {after['flows']} != {expected}")
        replayed = after.get("load", {}).get("replayed", -1)
        shutil.rmtree(copy, ignore_errors=True)
    res.put("restart", "flowd", ds.size, {
        "seconds": statistics.median(times), "replayed": replayed,
        "journal_bytes": stats["journal"]["bytes"], "flows": expected})


def writes_during_snapshots(ds: Dataset, st: Settings, work: Path, res: Results) -> None:
    """One client doing add_flow (strict) for a while at a big size, snapshots running."""
    data_dir = work / f"snapwrites-{ds.size}"
    ds.copy_to(data_dir)
    with Flowd(data_dir, "strict") as d, d.client() as c:
        count0 = c.stats()["snapshot"]["count"]
        lat: list[float] = []
        now = time.perf_counter
        t0 = prev = now()
        end = t0 + st.snap_seconds
        i = 0
        while prev < end:
            c.add_flow(*sample_flow(i))
            t = now()
            lat.append(t - prev)
            prev, i = t, i + 1
        snaps = c.stats()["snapshot"]["count"] - count0
    res.put("write_snap", "flowd strict", ds.size, summarize(lat, prev - t0))
    res.put("write_snap_count", "flowd strict", ds.size, snaps)
