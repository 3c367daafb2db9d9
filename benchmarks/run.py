"""``make bench``: every workload, every peer, one run; then the table and the plot.

Each step is guarded: a failing workload or a missing peer leaves a line in
the report ("skipped" / "failed", with the error) and the run goes on, so one
broken piece never hides the rest. Everything lives in one temp dir that is
removed at the end (``FLOWD_BENCH_KEEP=1`` keeps it, with the daemons' logs).

    .venv/bin/python -m benchmarks.run          # full run, ~10-15 min
    FLOWD_BENCH_QUICK=1 .venv/bin/python -m benchmarks.run   # ~1-2 min smoke run
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import (
    curve_bench,
    etcd_bench,
    flowd_bench,
    flowd_lifecycle,
    machine,
    memory,
    peer_bench,
    report,
    scale_bench,
    scale_report,
    stray_bench,
    targets,
    throughput_bench,
)
from .datagen import Datasets
from .peers import redis_peer
from .results import Results
from .settings import Settings, load
from .workloads import Sample

Guard = Callable[[str, Callable[[], None]], None]


def make_guard(res: Results, t0: float) -> Guard:
    """Run one step: progress line before, its new figures after, failures recorded."""
    def guard(name: str, fn: Callable[[], None]) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {name} ...", flush=True)
        before = _keys(res)
        started = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            traceback.print_exc()
            res.fail(f"{name}: {type(exc).__name__}: {_last_lines(str(exc))}")
            return
        res.timings[name] = round(time.perf_counter() - started, 2)
        for key in sorted(_keys(res) - before):
            print(f"          {'/'.join(map(str, key))}: {_short(res.get(*key))}", flush=True)
        print(f"          ({res.timings[name]:.1f} s)", flush=True)
    return guard


def _last_lines(text: str, keep: int = 3) -> str:
    """The end of an error (for a subprocess traceback: the exception itself)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    head = lines[0] if lines else ""
    tail = lines[-keep:] if len(lines) > keep else lines[1:]
    return " | ".join([head, *tail])[:600]


def _keys(res: Results) -> set[tuple[str, str, int]]:
    return {(w, s, n) for w, per in res.data.items() for s, sizes in per.items() for n in sizes}


def _short(v: Any) -> str:
    if isinstance(v, Sample):
        p = "" if v.p50_us is None else f", p50 {v.p50_us:,.1f} µs, p99 {v.p99_us:,.1f} µs"
        return f"{v.ops_per_s:,.0f} ops/s{p}"
    return f"{v:,.4g}" if isinstance(v, float) else str(v)


def per_size(st: Settings, work: Path, res: Results, datasets: Datasets,
             redis_bin: str | None, guard: Guard) -> None:
    """The workloads measured at each store size."""
    for n in st.sizes:
        ds = datasets.get(n)
        if st.wants("session"):
            flowd_bench.session(ds, st, work, res, guard)
        if st.wants("start"):
            guard(f"flowd cold start + RSS @{n}",
                  lambda ds=ds: flowd_lifecycle.cold_start(ds, st, work, res))
        if st.wants("memory"):
            guard(f"plain-dict process RSS @{n}", lambda ds=ds: plain_memory(ds.path, ds.size, res))
        if st.wants("redis") and redis_bin:
            guard(f"redis HGET/HSET @{n}",
                  lambda ds=ds: peer_bench.redis_size(redis_bin, ds, st, work, res))
        if st.wants("sqlite"):
            guard(f"sqlite SELECT/INSERT @{n}", lambda ds=ds: peer_bench.sqlite_size(ds, st, work,
                                                                                    res))
        if st.wants("seed"):
            guard(f"seed reads, add+save, load @{n}",
                  lambda ds=ds: peer_bench.seed_size(ds, st, res))


def plain_memory(path: Path, n: int, res: Results) -> None:
    for loader in memory.LOADERS:
        out = memory.plain_rss(path, loader)
        system = f"plain {loader}.{'load' if loader == 'json' else 'loads'}"
        res.put("rss", system, n, out["rss"])
        res.put("rss_base", system, n, out["rss_before"])
        res.put("rss_peak", system, n, out["peak"])


def once(st: Settings, work: Path, res: Results, datasets: Datasets, redis_bin: str | None,
         guard: Guard) -> None:
    """Size-independent workloads, the big-store ones, then multi-process throughput."""
    if st.wants("start"):
        guard("flowd empty RSS", lambda: flowd_lifecycle.empty_rss(work, res))
    if st.wants("echo"):
        guard("zmq echo floor", lambda: peer_bench.echo(st, work, res))
    if st.wants("curve"):
        guard(f"flowd plain tcp vs CURVE tcp @{st.tp_size}",
              lambda: curve_bench.tcp_vs_curve(datasets.get(st.tp_size), st, work, res))
    big = datasets.get(st.big)
    if st.wants("restart"):
        guard(f"restart after SIGKILL with a full journal @{st.big}",
              lambda: flowd_lifecycle.restart_full_journal(big, st, work, res))
    if st.wants("stray"):
        guard(f"old tool's rewrite merged, memory of written files @{st.big}",
              lambda: stray_bench.stray_merge(big, st, work, res))
    if st.wants("snapwrites"):
        guard(f"add_flow while snapshots run @{st.big}",
              lambda: flowd_lifecycle.writes_during_snapshots(big, st, work, res))
    if st.wants("etcd"):
        guard(f"etcd backend writes (1 and 3 members) and a host joining @{st.big}",
              lambda: etcd_bench.etcd_backend(st, work, res))
    tp = datasets.get(st.tp_size)
    if st.wants("throughput"):
        for mode in throughput_bench.FLOWD_MODES:
            guard(f"flowd {mode} writes/s, 1 and {st.procs} procs",
                  lambda mode=mode: throughput_bench.flowd_writes(mode, tp, st, work, res))
        for fsync in ("always", "everysec") if redis_bin else ():
            guard(f"redis {fsync} writes/s, 1 and {st.procs} procs",
                  lambda f=fsync: throughput_bench.redis_writes(redis_bin, f, tp, st, work, res))
        guard(f"sqlite writes/s, 1 and {st.procs} procs",
              lambda: throughput_bench.sqlite_writes(tp, st, work, res))
    if st.wants("mixed"):
        mixed(st, work, res, tp, redis_bin, guard)
    if st.wants("scale"):
        scale(st, work, res, datasets, tp, redis_bin, guard)


def scale(st: Settings, work: Path, res: Results, datasets: Datasets, tp: Any,
          redis_bin: str | None, guard: Guard) -> None:
    """Issue 12: each figure at 10k, 100k (and with FLOWD_BENCH_1M=1, 1M) flows."""
    for n in st.scale_sizes:
        guard(f"scale: start, RSS, paced add_flow, CPU, GIL @{n}",
              lambda n=n: scale_bench.scale(datasets.get(n), st, work, res))
    guard(f"daemon CPU per durable write, 1 and {st.procs} procs (redis always beside)",
          lambda: scale_bench.cpu_per_write(tp, st, work, res, redis_bin))


def mixed(st: Settings, work: Path, res: Results, tp: Any, redis_bin: str | None,
          guard: Guard) -> None:
    for mode in ("strict", "relaxed"):
        guard(f"flowd {mode} mixed, {st.procs} procs",
              lambda mode=mode: throughput_bench.flowd_mixed(mode, tp, st, work, res))
    for fsync in ("always", "everysec") if redis_bin else ():
        guard(f"redis {fsync} mixed, {st.procs} procs",
              lambda f=fsync: throughput_bench.redis_mixed(redis_bin, f, tp, st, work, res))
    guard(f"sqlite mixed, {st.procs} procs", lambda: throughput_bench.sqlite_mixed(tp, st, work,
                                                                                  res))


def million_note(res: Results, st: Settings) -> None:
    """Say why 1M flows was not run, with this run's own figures as the reason."""
    n = st.big
    if n >= 1_000_000 or not res.get("rss", "flowd", n):
        return  # 1M was run, or the per-size steps were not (FLOWD_BENCH_ONLY): no reason to give
    scale = 1_000_000 / n
    at_big = sum(t for name, t in res.timings.items() if name.endswith(f"@{n}"))
    save = res.get("snapshot", "seed save", n) or 0.0
    rss = res.get("rss", "flowd", n) or 0
    snap = res.get("snapshot_bytes", "flowd", n) or 0
    res.note(f"1M flows not run by default (time, not memory): the per-size steps at "
             f"{n:,} flows took {at_big / 60:.1f} min of this {res.seconds / 60:.1f}-min run "
             f"and grow about linearly, so 1M would add roughly {at_big * scale / 60:.0f} min "
             f"on this {res.machine.get('cores')}-core machine (one seed add+save alone "
             f"~{save * scale:.0f} s; each flowd snapshot ~{snap * scale / 2**20:.0f} MiB), past "
             f"the 10-15 min budget. Memory would fit: flowd ~{rss * scale / 2**30:.1f} GiB of "
             f"{res.machine.get('ram_gib')} GiB. Include it with "
             f"FLOWD_BENCH_SIZES=1000,10000,100000,1000000.")


def settings_json(st: Settings) -> dict[str, Any]:
    out = dataclasses.asdict(st)
    out["only"] = sorted(st.only)
    out["out_dir"] = str(st.out_dir)
    return out


def write_outputs(res: Results, st: Settings) -> None:
    st.out_dir.mkdir(parents=True, exist_ok=True)
    checks = targets.evaluate(res, st)
    md = st.out_dir / f"{st.name}.md"
    md.write_text("\n".join([report.render(res, st, checks), *scale_report.scale_section(res, st)])
                  + "\n", encoding="utf-8")
    res.save(st.out_dir / f"{st.name}.json")
    try:
        from . import plot  # matplotlib: only here, not in every spawned worker
        plot.render(res, st.out_dir / f"{st.name}.png")
        plot.render_scale(res, st.out_dir / f"{st.name}-scale.png")
    except Exception as exc:  # noqa: BLE001 - the table matters more than the picture
        print(f"plot failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    print("\n".join(["", "Targets:", *(t.line() for t in checks), "",
                     f"wrote {md} (+ .png, .json)"]), flush=True)


def main() -> int:
    st = load()
    work = Path(tempfile.mkdtemp(prefix="flowd-bench-"))
    res = Results(machine=machine.describe(work), settings=settings_json(st))
    t0 = time.perf_counter()
    print(f"flowd bench ({'quick' if st.quick else 'full'}): sizes {st.sizes}, runs {st.runs}, "
          f"work dir {work}", flush=True)
    guard = make_guard(res, t0)
    redis_bin = redis_peer.find_server(st.apt)
    if redis_bin is None:
        res.skip(redis_peer.SKIP_LINE)
    try:
        datasets = Datasets(work / "data")
        per_size(st, work, res, datasets, redis_bin, guard)
        once(st, work, res, datasets, redis_bin, guard)
    finally:
        res.seconds = time.perf_counter() - t0
        million_note(res, st)
        res.machine["load average (1 min) at end"] = machine.loadavg()
        write_outputs(res, st)
        if st.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
