"""Ten times the flows (issue 12): how start, memory, paced writes and CPU scale.

At each scale size one fresh daemon runs inside :mod:`benchmarks.gil_probe`
on a copy of the generated store; start-to-ready is timed on the restart,
once flowd has written its own flows.json (the first start is kept too),
next to the seed's load of that same file (in a fresh interpreter). Once
ready, one client adds flows at a steady pace (``FLOWD_BENCH_SCALE_RATE``/s
for ``FLOWD_BENCH_SCALE_SECONDS``) with a short snapshot interval, so
snapshots of the whole store keep running meanwhile: the latency shape
(p50, p99, max), the daemon's CPU (the probe thread's own CPU left out),
the snapshot's duration and the longest GIL hold are what the
issue's targets bound. The request-path figure (daemon CPU per durable write
under many strict writers) is measured here too, on the throughput store.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import listing_bench, steady_cpu
from .daemon import Flowd
from .datagen import Dataset, sample_flow
from .peers import redis_peer, zmq_echo
from .peers.seed import run_job
from .results import Results
from .settings import Settings
from .workloads import percentile, throughput

SNAPSHOT_INTERVAL = "0.5"
SETTLE = 0.5


def scale(ds: Dataset, st: Settings, work: Path, res: Results) -> None:
    n = ds.size
    data_dir = work / f"scale-{n}"
    ds.copy_to(data_dir)
    probe_out = work / f"scale-{n}.probe.json"
    d = Flowd(data_dir, "strict", "--snapshot-interval", SNAPSHOT_INTERVAL,
              launcher=("-m", "benchmarks.gil_probe", str(probe_out)))
    try:
        # the generated file is not flowd's: the first start parses it fully and writes
        # flowd's own; a daemon restarting on its data dir (the start that counts) reads that
        res.put("scale_first_start", "flowd", n, d.start())
        d.stop()
        # the seed loads the same file flowd restarts on: flowd's own (one flow per line)
        seed = run_job("load", data_dir / "flows.json")
        res.put("scale_seed_load", "seed", n, seed["seconds"])
        res.put("scale_start", "flowd", n, d.start())
        d.wait_indexed()
        time.sleep(SETTLE)
        res.put("scale_rss", "flowd", n, d.rss())
        res.put("scale_rss_peak", "flowd", n, d.peak_rss())  # the restart's, before writes
        res.put("scale_file_bytes", "flowd", n, (data_dir / "flows.json").stat().st_size)
        # the file as generated (the old tools' layout): the baseline issue 12 measured against
        res.put("scale_source_bytes", "flowd", n, ds.path.stat().st_size)
        _paced(d, st, res, n, probe_out)
        listing_bench.listing(d, res, n)
    finally:
        d.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def _paced(d: Flowd, st: Settings, res: Results, n: int, probe_out: Path) -> None:
    """add_flow at a steady rate while snapshots run; latency, CPU, snapshots, GIL."""
    with d.client() as c:
        snap0 = c.stats()["snapshot"]
        probe0 = _probe(probe_out)

        def daemon_cpu() -> float:
            return d.cpu_seconds() - d.thread_cpu_seconds(probe0.get("tid", 0))
        installs = steady_cpu.Installs(d.data_dir / "flows.json", daemon_cpu)
        installs.start()
        cpu0 = daemon_cpu()
        wall0 = time.time()
        lat, elapsed = _pace(c, st.scale_rate, st.scale_seconds)
        wall1 = time.time()
        cpu = daemon_cpu() - cpu0
        snap = c.stats()["snapshot"]
        # the same writes go on until whole snapshot cycles are seen (not timed, not judged)
        _pace(c, st.scale_rate, steady_cpu.MAX_SECONDS, first=len(lat),
              done=lambda: installs.count() > steady_cpu.CYCLES)
        installs.stop()
    res.put("scale_cpu_steady", "flowd", n, steady_cpu.share(installs.marks))
    time.sleep(0.6)  # the probe writes its figures every half second
    probe = _probe(probe_out)
    lat.sort()
    res.put("scale_add", "flowd", n, {
        "p50_ms": percentile(lat, 50) * 1e3, "p99_ms": percentile(lat, 99) * 1e3,
        "max_ms": lat[-1] * 1e3, "writes": len(lat), "rate": len(lat) / elapsed})
    res.put("scale_cpu", "flowd", n, cpu / elapsed)
    res.put("scale_snapshot", "flowd", n, {
        "count": snap["count"] - snap0["count"], "last_s": snap["last_seconds"],
        "avg_s": snap["avg_seconds"],
        # the snapshot threads' share of a core, part of scale_cpu (counted at each finish)
        "cpu_share": (snap.get("cpu_seconds", 0.0) - snap0.get("cpu_seconds", 0.0)) / elapsed})
    res.put("scale_gil", "flowd", n, _gil(probe, wall0, wall1))


def _gil(probe: dict[str, Any], wall0: float, wall1: float) -> dict[str, Any]:
    """The probe's late wake-ups within the window: the longest, while a snapshot ran,
    the longest wait for the GIL, how many over 10 ms, and the longest GC passes."""
    lates = [(late, snap, late - awake) for t, late, snap, awake in probe.get("lates", [])
             if wall0 <= t <= wall1]
    return {
        "max_ms": max((late for late, _, _ in lates), default=0.0) * 1e3,
        "max_snapshot_ms": max((late for late, s, _ in lates if s), default=0.0) * 1e3,
        # the lateness spent asleep (not on a CPU, not waiting for one): waiting for the GIL
        "gil_max_ms": max((gil for _, _, gil in lates), default=0.0) * 1e3,
        "over_10ms": sum(late > 0.010 for late, _, _ in lates),
        "gc_max_ms": _gc_max(probe, wall0, wall1)}


def _gc_max(probe: dict[str, Any], wall0: float, wall1: float) -> dict[str, float]:
    """The longest cyclic-GC pass of each generation within the window, in ms."""
    out: dict[str, float] = {}
    for t, gen, took, *_where in probe.get("gcs", []):
        if wall0 <= t <= wall1:
            out[f"gen{gen}"] = max(out.get(f"gen{gen}", 0.0), round(took * 1e3, 1))
    return out


def _pace(c: Any, rate: float, seconds: float, first: int = 0,
          done: Callable[[], bool] | None = None) -> tuple[list[float], float]:
    """One add_flow every 1/rate s on a fixed schedule (a late one does not shift the
    rest), for ``seconds`` or until ``done()``; the flows are sample_flow(first...)."""
    now = time.perf_counter
    lat: list[float] = []
    t0 = now()
    total = int(rate * seconds)
    for i in range(total):
        if done is not None and done():
            break
        wait = t0 + i / rate - now()
        if wait > 0:
            time.sleep(wait)
        t = now()
        c.add_flow(*sample_flow(first + i))
        lat.append(now() - t)
    return lat, now() - t0


def _probe(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def cpu_per_write(ds: Dataset, st: Settings, work: Path, res: Results,
                  redis_bin: str | None = None) -> None:
    """Daemon CPU µs per durable (strict) write with ``procs`` writer processes, and
    (with ``redis_bin``) Redis ``appendfsync always`` under the same writers right
    after, side by side: the issue's ratio targets compare these two. The wire's
    floor (a bare ZeroMQ group commit, :mod:`.peers.zmq_echo`) runs beside them: what
    any server on flowd's wire reaches on this machine."""
    for procs in (1, st.procs):
        us, rate = flowd_writes(ds, work, procs, st.seconds)
        res.put("cpu_per_write_us", "flowd strict", procs, us)
        res.put("cpu_per_write_rate", "flowd strict", procs, rate)
        us, rate = floor_writes(work, procs, st.seconds)
        res.put("cpu_per_write_us", "wire floor", procs, us)
        res.put("cpu_per_write_rate", "wire floor", procs, rate)
        if redis_bin is not None:
            res.put("cpu_per_write_rate", "redis always", procs,
                    redis_writes(redis_bin, ds, work, procs, st.seconds))


def flowd_writes(ds: Dataset, work: Path, procs: int, seconds: float,
                 mode: str = "strict",
                 during: Callable[[Flowd], Callable[[], None]] | None = None
                 ) -> tuple[float, float]:
    """(daemon CPU µs per write, writes/s) of ``procs`` writer processes on a fresh copy
    of ``ds``; ``during(daemon)`` starts something beside the run (a profiler) and
    returns what stops it."""
    data_dir = work / f"cpu-write-{mode}-{procs}"
    ds.copy_to(data_dir)
    with Flowd(data_dir, mode) as d:
        stop = during(d) if during is not None else None
        cpu0 = d.cpu_seconds()
        before = d.stats()["revision"]
        s = throughput("benchmarks.flowd_bench:writer", (str(data_dir),), procs, seconds)
        writes = d.stats()["revision"] - before
        cpu = d.cpu_seconds() - cpu0
        if stop is not None:
            stop()
    shutil.rmtree(data_dir, ignore_errors=True)
    return cpu / max(1, writes) * 1e6, s.ops_per_s


def floor_writes(work: Path, procs: int, seconds: float) -> tuple[float, float]:
    """(server CPU µs per write, writes/s) of the durable-write floor under the same
    writer processes: ROUTER, msgpack, one write + fdatasync per poll turn."""
    with zmq_echo.EchoServer(work, journal=work / "echo-durable.log") as srv:
        cpu0 = srv.cpu_seconds()
        s = throughput("benchmarks.peers.zmq_echo:writer", (srv.endpoint,), procs, seconds)
        cpu = srv.cpu_seconds() - cpu0
    (work / "echo-durable.log").unlink(missing_ok=True)
    return cpu / max(1.0, s.ops_per_s * seconds) * 1e6, s.ops_per_s


def redis_writes(redis_bin: str, ds: Dataset, work: Path, procs: int,
                 seconds: float) -> float:
    """Redis ``appendfsync always`` writes/s under the same writer processes."""
    with redis_peer.RedisServer(redis_bin, "always", work) as srv:
        srv.fill(ds)
        return throughput("benchmarks.peers.redis_peer:writer", (srv.socket,), procs,
                          seconds).ops_per_s
