"""The targets of issue 6 (and the latency bounds of issue 3), checked as PASS/FAIL.

Each check reads only the Results, so a skipped peer or a failed workload
gives "n/a" with the reason instead of a guess. Where a check could be read
more or less strictly, the stricter reading is used and stated in the line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .results import Results
from .settings import Settings


@dataclass
class Target:
    name: str
    status: str  # PASS | FAIL | n/a
    detail: str

    def line(self) -> str:
        return f"{self.status:4}  {self.name}: {self.detail}"


def _size(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k" if n >= 1000 else str(n)


def _judge(name: str, ok: bool, detail: str) -> Target:
    return Target(name, "PASS" if ok else "FAIL", detail)


def reads_vs_redis(res: Results, st: Settings) -> Target:
    name = "plain reads/s >= redis HGET/s (1 client, every size)"
    parts, ok = [], True
    for n in st.sizes:
        ours, theirs = res.sample("read", "flowd", n), res.sample("read", "redis HGET", n)
        if ours is None or theirs is None:
            return Target(name, "n/a", f"no {'flowd' if ours is None else 'redis'} reads at "
                          f"{_size(n)}")
        ratio = ours.ops_per_s / theirs.ops_per_s
        ok &= ratio >= 1.0
        parts.append(f"{_size(n)} {ours.ops_per_s:,.0f} vs {theirs.ops_per_s:,.0f}/s "
                     f"({ratio:.2f}x)")
    return _judge(name, ok, "; ".join(parts))


def writes_vs_redis(res: Results, procs: int) -> Target:
    name = f"strict durable writes/s >= redis appendfsync=always ({procs} client"
    name += "s)" if procs > 1 else ")"
    ours = res.sample("tp_write", "flowd strict", procs)
    theirs = res.sample("tp_write", "redis always", procs)
    if ours is None or theirs is None:
        return Target(name, "n/a", "flowd or redis throughput not measured")
    ratio = ours.ops_per_s / theirs.ops_per_s
    return _judge(name, ratio >= 1.0,
                  f"{ours.ops_per_s:,.0f} vs {theirs.ops_per_s:,.0f}/s ({ratio:.2f}x)")


def add_vs_seed(res: Results, st: Settings) -> Target:
    n = st.big
    name = f"add_flow p50 @{_size(n)} >= 2000x faster than the seed's add+save"
    seed = res.sample("write", "seed add+save", n)
    p50s = [s.p50_us for s in (res.sample("write", "flowd strict", n),
                               res.sample("write_snap", "flowd strict", n)) if s and s.p50_us]
    if seed is None or not p50s or seed.p50_us is None:
        return Target(name, "n/a", "flowd or seed writes not measured")
    ours = max(p50s)  # the worse of: plain write runs, writes while snapshots run
    ratio = seed.p50_us / ours
    return _judge(name, ratio >= 2000,
                  f"{ours:,.0f} µs vs {seed.p50_us / 1e6:.2f} s ({ratio:,.0f}x; flowd figure "
                  "is the worse of the plain and the during-snapshot runs)")


def start_vs_seed(res: Results, st: Settings) -> Target:
    n = st.big
    name = f"start-to-ready @{_size(n)} >= 5x faster than the seed's load"
    ours, seed = res.get("start", "flowd", n), res.get("start", "seed load", n)
    if ours is None or seed is None:
        return Target(name, "n/a", "flowd start or seed load not measured")
    ratio = seed / ours
    return _judge(name, ratio >= 5,
                  f"{ours:.2f} s (spawn to first ping) vs {seed:.2f} s (json.load + dict, "
                  f"interpreter start not counted) = {ratio:.1f}x")


def rss_vs_plain(res: Results, st: Settings) -> Target:
    n = st.big
    name = f"RSS @{_size(n)} <= 1.5x a plain process holding the same dicts"
    ours = res.get("rss", "flowd", n)
    plain = [v for v in (res.get("rss", "plain json.load", n),
                         res.get("rss", "plain orjson.loads", n)) if v]
    if ours is None or not plain:
        return Target(name, "n/a", "flowd or plain-process RSS not measured")
    ref = min(plain)
    ratio = ours / ref
    return _judge(name, ratio <= 1.5, f"{ours / 2**20:.0f} MiB vs {ref / 2**20:.0f} MiB "
                  f"(the smaller of json.load and orjson.loads) = {ratio:.2f}x")


def cached_vs_plain(res: Results, st: Settings) -> Target:
    name = "cached read >= 100x faster than a plain round trip (p50, every size)"
    parts, ok = [], True
    for n in st.sizes:
        cached, plain = res.sample("read", "flowd cached", n), res.sample("read", "flowd", n)
        if cached is None or plain is None or not cached.p50_us or not plain.p50_us:
            return Target(name, "n/a", f"cached or plain reads not measured at {_size(n)}")
        ratio = plain.p50_us / cached.p50_us
        ok &= ratio >= 100
        parts.append(f"{_size(n)} {cached.p50_us:.2f} vs {plain.p50_us:.0f} µs ({ratio:,.0f}x)")
    return _judge(name, ok, "; ".join(parts))


def snapshot_latency(res: Results, st: Settings) -> list[Target]:
    n = st.big
    during, base = res.sample("write_snap", "flowd strict", n), res.sample(
        "write", "flowd strict", st.small)
    count = res.get("write_snap_count", "flowd strict", n)
    p99_name = f"(issue 3) add_flow p99 @{_size(n)} while snapshots run <= 50 ms"
    p50_name = (f"(issue 3) add_flow p50 @{_size(n)} while snapshots run <= 2x p50 "
                f"@{_size(st.small)}")
    if during is None or base is None or during.p99_us is None or base.p50_us is None:
        return [Target(p99_name, "n/a", "not measured"), Target(p50_name, "n/a", "not measured")]
    ratio = (during.p50_us or 0) / base.p50_us
    return [_judge(p99_name, during.p99_us <= 50_000,
                   f"p99 {during.p99_us / 1000:.1f} ms over {count} snapshots"),
            _judge(p50_name, ratio <= 2.0, f"{during.p50_us:,.0f} vs {base.p50_us:,.0f} µs "
                   f"({ratio:.2f}x)")]


def group_commit(res: Results, st: Settings) -> Target:
    name = f"(issue 3) group commit: strict writes/s with {st.procs} writers >= 1.5x with 1"
    one, many = res.sample("tp_write", "flowd strict", 1), res.sample(
        "tp_write", "flowd strict", st.procs)
    if one is None or many is None:
        return Target(name, "n/a", "not measured")
    ratio = many.ops_per_s / one.ops_per_s
    rpc = res.get("records_per_commit", "flowd strict", st.procs)
    return _judge(name, ratio >= 1.5, f"{many.ops_per_s:,.0f} vs {one.ops_per_s:,.0f}/s "
                  f"({ratio:.2f}x; {rpc} records per fsync)")


def scale_targets(res: Results, st: Settings) -> list[Target]:
    """Issue 12 at 100k and 1M flows (the 1M bounds are checked at 100k as well)."""
    out: list[Target] = []
    for n in (n for n in res.sizes("scale_start") if n >= 100_000):
        at = f"(issue 12) @{_size(n)}"
        start, seed = res.get("scale_start", "flowd", n), res.get("scale_seed_load", "seed", n)
        if start and seed:
            out.append(_judge(f"{at} start-to-ready <= 1/10 of the seed's load",
                              seed / start >= 10, f"{start:.2f} vs {seed:.2f} s "
                              f"({seed / start:.1f}x)"))
        rss, size = res.get("scale_rss", "flowd", n), res.get("scale_file_bytes", "flowd", n)
        source = res.get("scale_source_bytes", "flowd", n)
        if rss and size:
            # judged against flowd's own file, the smaller; the generated one is said beside
            beside = f"; {rss / source:.2f}x the {source / 2**20:.0f} MiB file as generated" \
                if source else ""
            out.append(_judge(f"{at} RSS <= 1.5x flows.json", rss / size <= 1.5,
                              f"{rss / 2**20:.0f} vs {size / 2**20:.0f} MiB "
                              f"({rss / size:.2f}x{beside})"))
        add = res.get("scale_add", "flowd", n)
        if add:
            out.append(_judge(f"{at} paced add_flow p99 <= 5x p50, max <= 50 ms",
                              add["p99_ms"] <= 5 * add["p50_ms"] and add["max_ms"] <= 50,
                              f"p50 {add['p50_ms']:.2f}, p99 {add['p99_ms']:.2f}, max "
                              f"{add['max_ms']:.1f} ms at {add['rate']:.0f}/s"))
        cpu = res.get("scale_cpu", "flowd", n)
        if cpu is not None:
            steady = res.get("scale_cpu_steady", "flowd", n)
            beside = "" if not steady else (
                f" in the paced window; {steady['cpu'] * 100:.1f} % over "
                f"{steady['cycles']} whole snapshot cycles ({steady['seconds']:.0f} s)")
            out.append(_judge(f"{at} daemon CPU <= 15 % of a core under paced writes",
                              cpu <= 0.15, f"{cpu * 100:.1f} %{beside}"))
        gil = res.get("scale_gil", "flowd", n)
        if gil:
            held = gil.get("gil_max_ms", gil["max_ms"])
            out.append(_judge(f"{at} no GIL hold over 10 ms while snapshots run",
                              held <= 10,
                              f"longest wait for the GIL {held:.1f} ms in the paced window; "
                              f"probe lateness {gil['max_ms']:.1f} ms with its time on or "
                              f"waiting for a CPU ({gil['max_snapshot_ms']:.1f} ms while a "
                              "snapshot thread was alive; taking the view is before it "
                              "starts)"))
    us = res.get("cpu_per_write_us", "flowd strict", st.procs)
    if us is not None:
        out.append(_judge(f"(issue 12) daemon CPU per durable write <= 35 µs ({st.procs} "
                          "strict writers)", us <= 35, f"{us:.1f} µs"))
    for procs, want in ((st.procs, 0.9), (1, 0.8)):
        ours = res.get("cpu_per_write_rate", "flowd strict", procs)
        theirs = res.get("cpu_per_write_rate", "redis always", procs)
        if ours and theirs:
            out.append(_judge(f"(issue 12) {procs} strict writer{'s' if procs > 1 else ''} "
                              f">= {want}x redis appendfsync=always, side by side",
                              ours / theirs >= want,
                              f"{ours:,.0f} vs {theirs:,.0f}/s ({ours / theirs:.2f}x)"))
    return out


def evaluate(res: Results, st: Settings) -> list[Target]:
    checks: list[Callable[[], Target | list[Target]]] = [
        lambda: reads_vs_redis(res, st), lambda: writes_vs_redis(res, 1),
        lambda: writes_vs_redis(res, st.procs), lambda: add_vs_seed(res, st),
        lambda: start_vs_seed(res, st), lambda: rss_vs_plain(res, st),
        lambda: cached_vs_plain(res, st), lambda: snapshot_latency(res, st),
        lambda: group_commit(res, st), lambda: scale_targets(res, st)]
    out: list[Target] = []
    for check in checks:
        got = check()
        out.extend(got if isinstance(got, list) else [got])
    return out
