"""The run as markdown: machine, targets, then one table per workload with ratios.

Ratios are always "flowd relative to the peer" and say in their header which
way is better, so a reader never has to guess whether 0.5x is good. Holes
(a skipped peer, a failed workload) print as "-".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .results import ANY_SIZE, Results
from .settings import Settings
from .targets import Target
from .workloads import Sample

READ_ORDER = ("flowd", "flowd cached", "flowd async", "zmq echo", "redis HGET", "sqlite",
              "seed dict", "seed list search")
WRITE_ORDER = ("flowd strict", "redis always", "redis everysec", "sqlite FULL", "seed add+save")
TP_ORDER = ("flowd strict", "flowd relaxed", "flowd none", "redis always", "redis everysec",
            "sqlite FULL")
MiB = 2**20


def size_label(n: int) -> str:
    if n == ANY_SIZE:
        return "any"
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k" if n >= 1000 else str(n)


def f_ops(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def f_us(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 1 else f"{x:.2f}"


def f_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}" if x < 10 else f"{x:.1f}"


def f_x(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}x" if x >= 100 else f"{x:.2f}x"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def table(head: list[str], rows: Iterable[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def ordered(systems: list[str], order: tuple[str, ...]) -> list[str]:
    return [s for s in order if s in systems] + [s for s in systems if s not in order]


def latency_table(res: Results, workload: str, order: tuple[str, ...], ref: str) -> list[str]:
    """Rows of (system, size): ops/s, p50, p99, and flowd's ops/s relative to each."""
    rows = []
    for system in ordered(res.systems(workload), order):
        for n in sorted(res.data[workload][system]):
            s: Sample = res.data[workload][system][n]
            base = res.sample(workload, ref, n) or res.sample(workload, ref, ANY_SIZE)
            rel = ratio(base.ops_per_s, s.ops_per_s) if base and system != ref else None
            rows.append([system, size_label(n), f_ops(s.ops_per_s), f_us(s.p50_us),
                         f_us(s.p99_us), f_x(rel), str(s.runs)])
    return table(["system", "flows", "ops/s", "p50 µs", "p99 µs",
                  f"{ref} ops/s ÷ this (>1: {ref} faster)", "runs"], rows)


def header(res: Results, st: Settings) -> list[str]:
    m = res.machine
    out = [f"# flowd benchmark ({'quick smoke run' if st.quick else 'full run'})", "",
           f"Run {m.get('date')}, {res.seconds / 60:.1f} min, `make bench` "
           f"(`python -m benchmarks.run`).", ""]
    rows = [[k, str(v)] for k, v in m.items() if k != "date"]
    out += table(["machine", ""], rows)
    out.append(f"Settings: sizes {', '.join(size_label(n) for n in st.sizes)}; medians of "
               f"{st.runs} run(s); {st.read_ops} reads / {st.write_ops} writes per latency run; "
               f"{st.seconds:g} s per throughput run; {st.procs} processes; throughput store "
               f"{size_label(st.tp_size)} flows (fresh copy each run).")
    return out + [""]


def targets_section(targets: list[Target]) -> list[str]:
    out = ["## Targets", "", "```"]
    out += [t.line() for t in targets]
    return out + ["```", ""]


def throughput_section(res: Results, st: Settings) -> list[str]:
    out = [f"## Durable writes/s, 1 and {st.procs} writer processes", "",
           f"Each process: its own connection, one write at a time, {st.seconds:g} s. "
           "flowd none/relaxed and redis everysec are not durable at ack; listed for scale.", ""]
    ref1 = res.sample("tp_write", "flowd strict", 1)
    refn = res.sample("tp_write", "flowd strict", st.procs)
    rows = []
    for system in ordered(res.systems("tp_write"), TP_ORDER):
        one, many = res.sample("tp_write", system, 1), res.sample("tp_write", system, st.procs)
        rpc = res.get("records_per_commit", system, st.procs)
        rows.append([system, f_ops(one and one.ops_per_s), f_ops(many and many.ops_per_s),
                     f_x(ratio(many and many.ops_per_s, one and one.ops_per_s)),
                     f_us(many and many.p99_us), "-" if rpc is None else f"{rpc:g}",
                     f_x(ratio(ref1 and ref1.ops_per_s, one and one.ops_per_s)),
                     f_x(ratio(refn and refn.ops_per_s, many and many.ops_per_s))])
    out += table(["system", "1 proc /s", f"{st.procs} procs /s", f"{st.procs}:1",
                  f"p99 µs @{st.procs}", "records/fsync", "flowd strict ÷ this @1",
                  f"flowd strict ÷ this @{st.procs}"], rows)
    return out + mixed_section(res, st)


def mixed_section(res: Results, st: Settings) -> list[str]:
    out = [f"## Mixed load: {st.procs} processes, 80% get / 20% durable add", ""]
    ref = res.sample("tp_mixed", "flowd strict", st.procs)
    rows = []
    for system in ordered(res.systems("tp_mixed"), TP_ORDER):
        s = res.sample("tp_mixed", system, st.procs)
        if s is not None:
            rows.append([system, f_ops(s.ops_per_s), f_us(s.p50_us), f_us(s.p99_us),
                         f_x(ratio(ref and ref.ops_per_s, s.ops_per_s))])
    return out + table(["system", "ops/s", "p50 µs", "p99 µs", "flowd strict ÷ this"], rows)


def lifecycle_section(res: Results, st: Settings) -> list[str]:
    out = ["## Start and snapshot", "",
           "Start: flowd = spawn of `python -m flowd` until the first ping answers; seed = "
           "json.load + dict of Flow objects in a warm interpreter (its start-up not counted). "
           "Snapshot: flowd's `stats()['snapshot']` after `save(force=True)` (off the request "
           "path); seed = one add+save (json.dump indent=2, on the request path).", ""]
    rows = []
    for n in st.sizes:
        start, seed = res.get("start", "flowd", n), res.get("start", "seed load", n)
        snap, seed_save = res.get("snapshot", "flowd", n), res.get("snapshot", "seed save", n)
        rows.append([size_label(n), f_s(start), f_s(seed), f_x(ratio(seed, start)),
                     f_s(snap), _mib(res.get("snapshot_bytes", "flowd", n)), f_s(seed_save),
                     f_x(ratio(seed_save, snap))])
    out += table(["flows", "flowd start s", "seed load s", "seed ÷ flowd", "flowd snapshot s",
                  "snapshot MiB", "seed save s", "seed ÷ flowd"], rows)
    return out + restart_section(res, st) + memory_section(res, st)


MEMORY_ORDER = ("flowd", "plain json.load", "plain orjson.loads", "seed process")


def memory_section(res: Results, st: Settings) -> list[str]:
    """RSS per process and bytes per flow over the same process with nothing loaded."""
    out = ["## Memory (RSS)", "",
           "flowd: once ready (peak = VmHWM, the load's high-water mark); plain: a fresh "
           "interpreter holding the parsed flows.json; seed: a process holding the seed's dict "
           "of Flow objects. B/flow = (RSS - RSS of the same process empty) / flows.", ""]
    rows = []
    for system in ordered(res.systems("rss"), MEMORY_ORDER):
        for n in sorted(res.data["rss"][system]):
            rss = res.get("rss", system, n)
            base = res.get("rss_base", system, n) or res.get("rss_base", system, ANY_SIZE)
            plain = [v for v in (res.get("rss", "plain json.load", n),
                                 res.get("rss", "plain orjson.loads", n)) if v]
            per_flow = (rss - base) / n if rss and base else None
            rows.append([system, size_label(n), _mib(rss), _mib(res.get("rss_peak", system, n)),
                         "-" if per_flow is None else f"{per_flow:,.0f}",
                         f_x(ratio(rss, min(plain) if plain else None))])
    return out + table(["process", "flows", "RSS MiB", "peak MiB", "B/flow",
                        "÷ min(plain) (<=1.5x target)"], rows)


def _mib(x: float | None) -> str:
    return "-" if x is None else f"{x / MiB:,.1f}"


def restart_section(res: Results, st: Settings) -> list[str]:
    out: list[str] = []
    for n in res.sizes("restart"):
        r: dict[str, Any] = res.get("restart", "flowd", n)
        clean = res.get("start", "flowd", n)
        out.append(f"Restart after SIGKILL @{size_label(n)} with a full journal "
                   f"({r['replayed']:,} records replayed, {r['journal_bytes'] / MiB:.1f} MiB "
                   f"journal, {r['flows']:,} flows, all present): **{f_s(r['seconds'])} s** "
                   f"to ready (clean start at the same size: {f_s(clean)} s).")
    return out + [""] if out else out


def snapwrite_section(res: Results, st: Settings) -> list[str]:
    out = ["## add_flow while snapshots run", ""]
    base = res.sample("write", "flowd strict", st.small)
    rows = []
    for n in res.sizes("write_snap"):
        s = res.sample("write_snap", "flowd strict", n)
        count = res.get("write_snap_count", "flowd strict", n)
        if s is not None:
            rows.append([size_label(n), f"{s.n:,}", str(count), f_us(s.p50_us), f_us(s.p99_us),
                         f_us(base and base.p50_us),
                         f_x(ratio(s.p50_us, base and base.p50_us))])
    return out + table(["flows", "writes", "snapshots meanwhile", "p50 µs", "p99 µs",
                        f"p50 µs @{size_label(st.small)}", "p50 ÷ small-store p50"], rows)


def client_section(res: Results, st: Settings) -> list[str]:
    out = ["## Client read paths: cached mirror, plain round trip, async pipelined, raw floor", ""]
    echo = res.sample("read", "zmq echo", ANY_SIZE)
    rows = []
    for n in st.sizes:
        plain, cached = res.sample("read", "flowd", n), res.sample("read", "flowd cached", n)
        aio = res.sample("read", "flowd async", n)
        rows.append([size_label(n), f_us(cached and cached.p50_us),
                     f_us(plain and plain.p50_us), f_us(echo and echo.p50_us),
                     f_x(ratio(plain and plain.p50_us, cached and cached.p50_us)),
                     f_x(ratio(plain and plain.p50_us, echo and echo.p50_us)),
                     f_ops(aio and aio.ops_per_s),
                     f_x(ratio(aio and aio.ops_per_s, plain and plain.ops_per_s)),
                     f_s(res.get("cache_load", "flowd cached", n)),
                     f"{res.get('journal_bytes', 'flowd strict', n) or 0:,.0f}"])
    return out + table(["flows", "cached p50 µs", "plain p50 µs", "zmq echo p50 µs",
                        "cached speed-up", "plain ÷ echo (cost over floor)", "async ops/s",
                        "async ÷ plain", "mirror load s", "journal B/write"], rows)


def stray_section(res: Results, st: Settings) -> list[str]:
    """An old tool's rewrite of flows.json merged, and the memory of written files."""
    n = st.big
    merge, parse = res.get("stray_merge", "flowd", n), res.get("stray_parse", "orjson.loads", n)
    if merge is None:
        return []
    loop, step = res.get("stray_loop", "flowd", n), res.get("stray_step_max", "flowd", n)
    out = ["## Old tools rewriting flows.json", "",
           f"At {size_label(n)} flows: the seed's manager renames, deletes and adds 10 flows "
           "each (one rename also made by flowd: a conflict) and saves; flowd keeps the file "
           "aside, parses it in a child process, reads the child's lines on the server loop "
           "a step at a time between requests, picks the base, merges, writes the conflict "
           "aside and journals the merge. Loop s: the loop's share of it; longest step: the "
           "most a request waited for it. Baseline: orjson.loads of the same file. Memory "
           "of written files: the sidecar after flowd's first file, and after 100 more files "
           "of 10 changed flows each.", ""]
    out += table(["flows", "merge s", "loop s", "longest step ms", "orjson.loads s",
                  "loop ÷ parse", "memory, 1 file",
                  "memory, 101 files", "history RAM est. (beyond the newest map)"],
                 [[size_label(n), f_s(merge), f_s(loop),
                   f_us(None if step is None else step * 1e3), f_s(parse),
                   f_x(ratio(loop, parse)),
                   _mib(res.get("memory_bytes_1", "flowd", n)),
                   _mib(res.get("memory_bytes", "flowd", n)),
                   _mib(res.get("memory_ram_estimate", "flowd", n))]])
    return out


def curve_section(res: Results, st: Settings) -> list[str]:
    """Issue 14: what CURVE costs per round trip, as ratios to plain tcp of the same run."""
    plain, curve = "flowd tcp", "flowd CURVE tcp"
    rows = []
    for workload, what in (("curve_read", "get_flow_by_id"), ("curve_write", "durable add_flow")):
        a, b = res.sample(workload, plain), res.sample(workload, curve)
        if a is None or b is None:
            continue
        rows.append([what, f_us(a.p50_us), f_us(b.p50_us), f_x(ratio(b.p50_us, a.p50_us)),
                     f_ops(a.ops_per_s), f_ops(b.ops_per_s),
                     f_x(ratio(b.ops_per_s, a.ops_per_s))])
    if not rows:
        return []
    return ["## CURVE on tcp (tools on other hosts)", "",
            "One client, 127.0.0.1 tcp, two daemons (one with --curve-dir), runs alternated. "
            "CURVE ÷ tcp p50: lower is better (1.00x = free); ops/s ratio: higher is better.",
            ""] + table(["op", "tcp p50 µs", "CURVE p50 µs", "CURVE ÷ tcp p50", "tcp ops/s",
                         "CURVE ops/s", "CURVE ÷ tcp ops/s"], rows)


def footer(res: Results, st: Settings) -> list[str]:
    out = []
    for title, lines in (("Skipped", res.skipped), ("Failed", res.failed),
                         ("Notes", res.notes)):
        if lines:
            out += [f"## {title}", ""] + [f"- {line}" for line in lines] + [""]
    return out


def render(res: Results, st: Settings, targets: list[Target]) -> str:
    parts = header(res, st) + targets_section(targets)
    parts += ["## Single-client reads (get by id)", ""]
    parts += latency_table(res, "read", READ_ORDER, "flowd")
    parts += ["## Single-client durable writes (add a flow)", "",
              "seed add+save is not even durable (no fsync); redis everysec acks before fsync.",
              ""]
    parts += latency_table(res, "write", WRITE_ORDER, "flowd strict")
    parts += throughput_section(res, st) + lifecycle_section(res, st)
    parts += snapwrite_section(res, st) + stray_section(res, st) + client_section(res, st)
    parts += curve_section(res, st)
    from .etcd_bench import etcd_section  # it imports this module's formatters
    parts += etcd_section(res, st)
    parts += footer(res, st)
    return "\n".join(parts)
