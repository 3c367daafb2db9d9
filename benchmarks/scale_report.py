"""The scaling table of issue 12 (markdown): each figure at each scale size."""

from __future__ import annotations

from typing import Any

from . import listing_bench, steady_cpu
from .report import f_s, ratio, size_label, table
from .results import Results
from .settings import Settings

MiB = 2**20


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f}"


def _row(res: Results, n: int) -> list[str]:
    start, seed = res.get("scale_start", "flowd", n), res.get("scale_seed_load", "seed", n)
    rss, size = res.get("scale_rss", "flowd", n), res.get("scale_file_bytes", "flowd", n)
    source = res.get("scale_source_bytes", "flowd", n)
    add: dict[str, Any] = res.get("scale_add", "flowd", n) or {}
    snap: dict[str, Any] = res.get("scale_snapshot", "flowd", n) or {}
    gil: dict[str, Any] = res.get("scale_gil", "flowd", n) or {}
    cpu = res.get("scale_cpu", "flowd", n)
    steady: dict[str, Any] = res.get("scale_cpu_steady", "flowd", n) or {}
    gc_max = gil.get("gc_max_ms") or {}
    first = res.get("scale_first_start", "flowd", n)
    peak = res.get("scale_rss_peak", "flowd", n)
    return [size_label(n), f_s(first), f_s(start), f_s(seed), f"{ratio(seed, start) or 0:.1f}x",
            "-" if rss is None else f"{rss / MiB:,.0f}",
            "-" if size is None else f"{size / MiB:,.0f}",
            "-" if not (rss and size) else f"{rss / size:.2f}x",
            "-" if not (rss and source) else f"{rss / source:.2f}x",
            "-" if peak is None else f"{peak / MiB:,.0f}",
            f"{add.get('rate', 0):.0f}/s", _ms(add.get("p50_ms")), _ms(add.get("p99_ms")),
            _ms(add.get("max_ms")),
            "-" if not add else f"{add['p99_ms'] / add['p50_ms']:.1f}x",
            "-" if cpu is None else f"{cpu * 100:.1f}",
            "-" if not steady else f"{steady['cpu'] * 100:.1f} ({steady['cycles']} × "
                                   f"{steady['seconds'] / steady['cycles']:.1f} s)",
            "-" if "cpu_share" not in snap else f"{snap['cpu_share'] * 100:.1f}",
            f"{snap.get('count', 0)} × {f_s(snap.get('avg_s'))}",
            _ms(gil.get("gil_max_ms")), _ms(gil.get("max_ms")), _ms(gil.get("max_snapshot_ms")),
            ", ".join(f"{g} {v}" for g, v in sorted(gc_max.items())) or "-"]


def scale_section(res: Results, st: Settings) -> list[str]:
    sizes = res.sizes("scale_start")
    out = ["## Ten times the flows (issue 12)", "",
           "One daemon per size, run inside `benchmarks.gil_probe`, on a copy of the "
           "generated store; the seed's load (in a fresh interpreter) of the file "
           "flowd restarts on, its own. "
           "First start: on the generated file (not flowd's: parsed fully, rewritten); "
           "start: the restart on flowd's own file (spawn to first ping). "
           f"Paced add_flow (strict) at {st.scale_rate:.0f}/s for {st.scale_seconds:.0f} s "
           "with `--snapshot-interval 0.5`, so whole-store snapshots run meanwhile. CPU: "
           "the daemon's user+system time over the paced window, the probe thread's own "
           "left out; of it, the snapshot threads' (counted when each snapshot finishes, so "
           "one still running at the end is not in it). CPU over whole snapshot cycles: "
           "the same writes go on past the window until flows.json has been replaced "
           f"{steady_cpu.CYCLES + 1} times since the window began (at most "
           f"{steady_cpu.MAX_SECONDS:.0f} s); the daemon's CPU from the first replace to the last, "
           "over the time between: its steady share, where the window (shorter than a "
           "cycle at 1M, and always holding the restart's first snapshot) cuts the "
           "cycle anywhere. GIL: the probe thread's longest "
           "wait for the GIL (its wake-up lateness from a 1 ms sleep less the time it "
           "spent on a CPU or runnable with no CPU free), then the lateness itself (whole "
           "paced window / while a snapshot thread was alive); below flowd's 1 ms switch "
           "interval it is contention, not a hold. GC: the longest cyclic-GC pass per "
           "generation over 1 ms (gc.callbacks), both within the paced window. The start's "
           "peak RSS: the daemon's high-water mark (VmHWM) once the restart is indexed. "
           "RSS ÷ file: against flowd's own flows.json (one flow per line); ÷ generated "
           "file: against the file as generated, in the old tools' `json.dump(indent=2)` "
           "layout, the file issue 12 measured its ratios against.", ""]
    if sizes:
        out += table(["flows", "first start s", "start s", "seed load s", "seed ÷ start",
                      "RSS MiB", "flows.json MiB", "RSS ÷ file", "RSS ÷ generated file",
                      "start's peak RSS MiB", "paced", "p50 ms", "p99 ms", "max ms",
                      "p99 ÷ p50", "CPU % of a core", "CPU % over whole snapshot cycles",
                      "of it snapshots %", "snapshots × s",
                      "GIL wait max ms", "probe late max ms", "probe late max ms (snapshot)",
                      "longest GC pass ms"],
                      [_row(res, n) for n in sizes])
    listed = res.sizes("listing")
    if listed:
        out += ["While one client lists every flow (`get_all_flows`, paged, on the same "
                "daemon right after the paced writes), another process pings it every 5 ms: "
                "the pings' latency is what every other tool waits while one reads the whole "
                "store. Pages as JSON text (the daemon joins its lines; this client's form) "
                "against the decoded pages older clients ask for (the daemon decodes and "
                "packs each flow), in the same run.", ""]
        out += table(["flows", "pages as", "listing s", "pings", "ping p50 ms", "p99 ms",
                      "max ms"],
                     [_listing_row(res, n, form) for n in listed for form in ("json", "decoded")])
    procs = res.sizes("cpu_per_write_us")
    if procs:
        out += ["Request path: daemon CPU per durable write (strict, 1000-flow store), "
                "user+system time of the daemon (all its threads) over the run ÷ revisions "
                "committed; Redis `appendfsync always` under the same writers right after. "
                "Wire floor: a bare ROUTER + msgpack server doing one write + fdatasync per "
                "poll turn (`benchmarks/peers/zmq_echo.py --journal`): what any server on "
                "flowd's wire reaches here, so `floor ÷ redis` bounds `flowd ÷ redis`.", ""]
        out += table(["writer processes", "writes/s", "daemon CPU µs per write",
                      "redis always writes/s", "flowd ÷ redis", "wire floor writes/s",
                      "floor CPU µs per write", "flowd ÷ floor", "floor ÷ redis"],
                     [_cpu_row(res, p) for p in procs])
    return out


def _cpu_row(res: Results, procs: int) -> list[str]:
    us = res.get("cpu_per_write_us", "flowd strict", procs) or 0.0
    rate = res.get("cpu_per_write_rate", "flowd strict", procs) or 0.0
    redis = res.get("cpu_per_write_rate", "redis always", procs)
    floor = res.get("cpu_per_write_rate", "wire floor", procs)
    floor_us = res.get("cpu_per_write_us", "wire floor", procs)

    def x(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}x" if a and b else "n/a"
    return [str(procs), f"{rate:,.0f}", f"{us:,.1f}", f"{redis:,.0f}" if redis else "n/a",
            x(rate, redis), f"{floor:,.0f}" if floor else "n/a",
            f"{floor_us:,.1f}" if floor_us else "n/a", x(rate, floor), x(floor, redis)]


def _listing_row(res: Results, n: int, form: str) -> list[str]:
    r = listing_bench.row(res, n, form)
    return [size_label(n), "JSON text" if form == "json" else "decoded (older clients)",
            f_s(r.get("seconds")), str(r.get("pings", "-")), _ms(r.get("p50_ms")),
            _ms(r.get("p99_ms")), _ms(r.get("max_ms"))]
