"""Shared timing helpers: latency percentiles, N-process throughput, medians.

Every system is measured by the same loop so that the figures differ only by
what the system does: one ``op(i)`` callable per operation, timed with
``perf_counter`` around each call. Multi-process runs use the ``spawn`` start
method so a worker never inherits the orchestrator's sockets, and a barrier so
all workers start their clock together.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import statistics
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Op = Callable[[int], object]
#: A worker factory, named "module:function", returns (op, close) in the worker.
Factory = Callable[..., tuple[Op, Callable[[], None]]]
BARRIER_TIMEOUT = 120.0


@dataclass
class Sample:
    """One measurement: throughput and (when known) latency percentiles in µs."""

    ops_per_s: float
    p50_us: float | None = None
    p99_us: float | None = None
    n: int = 0
    runs: int = 1


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (q in 0..100)."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


def summarize(latencies_s: list[float], elapsed_s: float, n: int | None = None) -> Sample:
    """Turn per-op latencies (seconds) into a Sample; ``n`` ops over ``elapsed_s``."""
    lat = sorted(latencies_s)
    count = len(lat) if n is None else n
    return Sample(ops_per_s=count / elapsed_s if elapsed_s > 0 else 0.0,
                  p50_us=percentile(lat, 50) * 1e6, p99_us=percentile(lat, 99) * 1e6,
                  n=count)


def time_ops(op: Op, n: int, warmup: int = 50, start: int = 0) -> Sample:
    """Call ``op(i)`` n times after a short warm-up; latency of each call."""
    for i in range(warmup):
        op(start + i)
    lat: list[float] = []
    now = time.perf_counter
    base = start + warmup
    t0 = prev = now()
    for i in range(n):
        op(base + i)
        t = now()
        lat.append(t - prev)
        prev = t
    return summarize(lat, prev - t0)


def median_sample(samples: Sequence[Sample]) -> Sample:
    """Median of each field across repeated runs (robust to one noisy run)."""
    def med(values: list[float | None]) -> float | None:
        vals = [v for v in values if v is not None]
        return statistics.median(vals) if vals else None
    return Sample(ops_per_s=statistics.median(s.ops_per_s for s in samples),
                  p50_us=med([s.p50_us for s in samples]),
                  p99_us=med([s.p99_us for s in samples]),
                  n=sum(s.n for s in samples), runs=len(samples))


def repeat(runs: int, fn: Callable[[int], Sample]) -> Sample:
    """Median of ``fn(run_index)`` over ``runs`` runs."""
    return median_sample([fn(r) for r in range(max(1, runs))])


def median_of(runs: int, fn: Callable[[int], float]) -> float:
    return statistics.median(fn(r) for r in range(max(1, runs)))


def resolve(name: str) -> Factory:
    module, _, attr = name.partition(":")
    return getattr(importlib.import_module(module), attr)


def _worker(factory: str, args: tuple[Any, ...], barrier: Any, seconds: float,
            out: Any, index: int, max_ops: int) -> None:
    """One process of a throughput run: build its op, wait for all, run for ``seconds``."""
    try:
        op, close = resolve(factory)(*args)
    except BaseException:
        barrier.abort()
        out.put((index, None, traceback.format_exc()))
        return
    try:
        op(-1 - index)  # connect and warm up before the clock starts
        barrier.wait()
        out.put((index, _run_for(op, seconds, index, max_ops), None))
    except BaseException:
        barrier.abort()
        out.put((index, None, traceback.format_exc()))
    finally:
        close()


def _run_for(op: Op, seconds: float, index: int,
             max_ops: int) -> tuple[int, float, list[float]]:
    now = time.perf_counter
    lat: list[float] = []
    i = index << 32  # distinct op numbers per worker (ids, keys)
    t0 = prev = now()
    end = t0 + seconds
    last = i + max_ops
    while prev < end and i < last:
        op(i)
        t = now()
        lat.append(t - prev)
        prev = t
        i += 1
    return len(lat), prev - t0, lat


def throughput(factory: str, args: tuple[Any, ...], procs: int, seconds: float,
               max_ops: int = 1 << 31) -> Sample:
    """Aggregate ops/s of ``procs`` worker processes running for ``seconds`` together
    (each stops early after ``max_ops`` ops)."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(procs + 1, timeout=BARRIER_TIMEOUT)
    out = ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(factory, args, barrier, seconds, out, i, max_ops),
                           daemon=True) for i in range(procs)]
    for w in workers:
        w.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass  # a worker failed; its traceback is in the queue
    results = [out.get(timeout=BARRIER_TIMEOUT + seconds * 4) for _ in workers]
    for w in workers:
        w.join(30)
    errors = [err for _, res, err in results if res is None]
    if errors:
        raise RuntimeError(f"{factory}: worker failed:\n{errors[0]}")
    total = sum(count / elapsed for _, (count, elapsed, _lat), _e in results)
    lat = [x for _, (_c, _e2, lats), _e in results for x in lats]
    sample = summarize(lat, 1.0, n=len(lat))
    sample.ops_per_s = total
    return sample
