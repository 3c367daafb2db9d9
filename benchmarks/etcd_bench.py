"""``make bench`` step ``etcd``: the etcd backend's durable writes beside its floors.

On real 1- and 3-member clusters (the `etcd` binary, loopback): one flowd
``--backend etcd`` host, its add_flow latency (one client) and throughput (1
and ``procs`` writer processes); beside it, in the same run, the local
backend (``flowd strict``: the journal and fsync) and etcd's own client doing
the transaction directly (benchmarks/etcd_floor.py's CAS txn: the floor).
Then the start-to-ready time of a host joining a cluster that already holds
``big`` flows. Ratios only, never absolute targets: the box is shared.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from pathlib import Path
from typing import Any

from . import etcd_floor
from .daemon import Flowd
from .datagen import make_flow, new_id, sample_flow
from .report import f_ops, f_s, f_us, f_x, ratio, table
from .results import ANY_SIZE, Results
from .settings import Settings
from .workloads import Sample, repeat, throughput, time_ops

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
LOCAL = "flowd local strict"
PREFIX = "/bench/flowd"


def _latency(data_dir: Path, st: Settings) -> Sample:
    from flowd_client import FlowClient
    with FlowClient(data_dir, timeout=60.0) as c:
        return repeat(st.runs, lambda r: time_ops(lambda i: c.add_flow(*sample_flow(i)),
                                                 st.write_ops, warmup=10, start=r * 10**6))


def _flowd_figures(name: str, data_dir: Path, st: Settings, res: Results, *extra: str) -> None:
    with Flowd(data_dir, "strict", *extra):
        res.put("etcd_write", name, ANY_SIZE, _latency(data_dir, st))
        for procs in (1, st.procs):
            res.put("etcd_tp", name, procs, repeat(st.runs, lambda r, p=procs: throughput(
                "benchmarks.flowd_bench:writer", (str(data_dir),), p, st.seconds)))


def _floor_figures(name: str, endpoints: list[str], st: Settings, res: Results) -> None:
    op, close = etcd_floor.cas_worker(endpoints[:1], 300)
    try:
        res.put("etcd_write", name, ANY_SIZE, repeat(st.runs, lambda r: time_ops(
            op, st.write_ops, start=r * 1_000_000)))
    finally:
        close()
    for procs in (1, st.procs):
        res.put("etcd_tp", name, procs, repeat(st.runs, lambda r, p=procs: throughput(
            "benchmarks.etcd_floor:cas_worker", (endpoints, 300), p, st.seconds)))


def _fill(endpoints: list[str], n: int) -> None:
    """``n`` flows in flowd's layout (flowd.etcd_codec), as many hosts would have left them."""
    from flowd.etcd_adapter import EtcdAdapter
    from flowd.etcd_codec import Layout
    from flowd.etcd_types import Put
    lay, rng, taken = Layout(PREFIX), random.Random(15), dict[str, Any]()
    with EtcdAdapter(endpoints, timeout=60.0) as a:
        for start in range(0, n, 100):
            puts = []
            for i in range(start, min(n, start + 100)):
                fid = new_id(rng, taken)
                taken[fid] = None
                flow = make_flow(rng, fid, i)
                puts.append(Put(lay.flow_key(fid), json.dumps(flow).encode()))
            a.txn([], puts)
        marker = {"ts": "", "ops": [], "current": None}
        a.txn([], [Put(lay.marker, json.dumps(marker).encode())])


def etcd_backend(st: Settings, work: Path, res: Results) -> None:
    if shutil.which("etcd") is None:
        res.skip("etcd backend: etcd not on PATH (apt-get install etcd-server)")
        return
    base = work / "etcd-bench"
    base.mkdir(parents=True, exist_ok=True)
    _flowd_figures(LOCAL, base / "local", st, res)
    for size in (1, 3):
        cluster = etcd_floor._cluster(base, size)
        try:
            eps = cluster.endpoints
            _floor_figures(f"etcd3 txn {size}m", eps, st, res)
            _flowd_figures(f"flowd etcd {size}m", base / f"host{size}", st, res, "--backend",
                           "etcd", "--etcd-endpoints", ",".join(eps), "--etcd-prefix",
                           PREFIX + "-w")
            if size == 3:
                _fill(eps, st.big)
                joiner = Flowd(base / "joiner", "strict", "--backend", "etcd",
                               "--etcd-endpoints", ",".join(eps), "--etcd-prefix", PREFIX)
                res.put("etcd_join_ready_s", "flowd etcd 3m", st.big, joiner.start())
                joiner.stop()
        finally:
            cluster.stop()


def etcd_section(res: Results, st: Settings) -> list[str]:
    """The etcd rows of the report, as ratios to the local backend of the same run."""
    ref = res.sample("etcd_write", LOCAL)
    ref1, refn = res.sample("etcd_tp", LOCAL, 1), res.sample("etcd_tp", LOCAL, st.procs)
    rows = []
    for system in res.systems("etcd_write"):
        lat: Any = res.sample("etcd_write", system)
        one, many = res.sample("etcd_tp", system, 1), res.sample("etcd_tp", system, st.procs)
        rows.append([system, f_us(lat.p50_us if lat else None),
                     f_x(ratio(lat.p50_us if lat else None, ref.p50_us if ref else None)),
                     f_ops(one.ops_per_s if one else None),
                     f_ops(many.ops_per_s if many else None),
                     f_x(ratio(many.ops_per_s if many else None,
                               refn.ops_per_s if refn else None)),
                     f_x(ratio(one.ops_per_s if one else None, ref1.ops_per_s if ref1 else None))])
    if not rows:
        return []
    out = ["## etcd backend (many hosts on one cluster)", "",
           "Durable add_flow through one host; `etcd3 txn` is etcd's own client doing the "
           "CAS transaction directly (the floor). Ratios to the local backend of this run.", ""]
    out += table(["system", "p50 µs", "p50 ÷ local", "1 writer ops/s",
                  f"{st.procs} writers ops/s", f"{st.procs}w ÷ local", "1w ÷ local"], rows)
    joined = res.get("etcd_join_ready_s", "flowd etcd 3m", st.big)
    if joined is not None:
        out += ["", f"A host joining a 3-member cluster of {st.big} flows: ready in "
                f"{f_s(joined)}.", ""]
    return out
