"""etcd's floor for flowd's etcd backend: what etcd gives through its own client.

The etcd backend's durable write is one transaction: compare the flow key's
mod_revision, put the new value, get it back. This measures that transaction
done directly through python3-etcd3 (and through flowd's adapter, to see its
cost), on real 1- and 3-member clusters started from the `etcd` binary:

- latency p50/p99 of one writer;
- throughput of 1 and ``procs`` writer processes (each on its own keys);
- bytes per flow in etcd's database after compaction and defragmentation,
  hence how many flows etcd's suggested 8 GiB database holds;
- the time to read every flow of a 100k-flow store (what a host joining the
  cluster does first), through the adapter and in one sorted etcd request.

    .venv/bin/python -m benchmarks.etcd_floor [--out results.json]

Knobs: the FLOWD_BENCH_* of benchmarks/settings.py (RUNS, WRITE_OPS, SECONDS,
PROCS, QUICK) and FLOWD_BENCH_ETCD_FLOWS (100000; quick 10000). ``make bench``
runs its CAS transaction beside the etcd backend (step ``etcd``,
benchmarks/etcd_bench.py); the storage and range figures are run from here.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from . import machine
from .datagen import make_flow, new_id
from .settings import Settings, load
from .workloads import Sample, repeat, throughput, time_ops

#: etcd's own defaults (the test clusters use slower heartbeats for a loaded box)
ETCD_FLAGS = ("--heartbeat-interval", "100", "--election-timeout", "1000")
ETCD_SUGGESTED_MAX_DB = 8 << 30
PREFIX = b"/flowd/default/flows/"
LOAD_BATCH = 100
KEYS_PER_WRITER = 100


def _cluster(base: Path, size: int) -> Any:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from etcd_cluster import EtcdCluster
    return EtcdCluster(base / f"etcd{size}-{time.monotonic_ns()}", size, extra=ETCD_FLAGS).start()


def _etcd3_client(endpoint: str) -> Any:
    import etcd3
    host, port = endpoint.removeprefix("http://").rsplit(":", 1)
    return etcd3.client(host, int(port), timeout=30,
                        grpc_options=[("grpc.max_receive_message_length", -1)])


def cas_worker(endpoints: list[str], value_size: int) -> tuple[Callable[[int], object],
                                                               Callable[[], None]]:
    """One writer through python3-etcd3: CAS on mod_revision + put + get, own keys."""
    c = _etcd3_client(endpoints[os.getpid() % len(endpoints)])
    prefix = f"/bench/{os.getpid()}/"
    value = b"x" * value_size
    revs: dict[str, int] = {}
    tx = c.transactions

    def op(i: int) -> object:
        key = prefix + str(i % KEYS_PER_WRITER)
        ok, resp = c.transaction(compare=[tx.mod(key) == revs.get(key, 0)],
                                 success=[tx.put(key, value), tx.get(key)],
                                 failure=[tx.get(key)])
        revs[key] = resp[-1][0][1].mod_revision
        if not ok:
            raise RuntimeError(f"unexpected conflict on {key}")
        return ok
    return op, c.close


def adapter_worker(endpoints: list[str], value_size: int) -> tuple[Callable[[int], object],
                                                                   Callable[[], None]]:
    """The same transaction through flowd's adapter."""
    from flowd.etcd_adapter import EtcdAdapter
    from flowd.etcd_types import Compare, Get, Put
    a = EtcdAdapter(endpoints, timeout=30)
    prefix = f"/bench-adapter/{os.getpid()}/".encode()
    value = b"x" * value_size
    revs: dict[bytes, int] = {}

    def op(i: int) -> object:
        key = prefix + str(i % KEYS_PER_WRITER).encode()
        r = a.txn([Compare.mod_revision(key, revs.get(key, 0))], [Put(key, value), Get(key)],
                  [Get(key)])
        revs[key] = r.results[-1].kvs[0].mod_revision
        if not r.succeeded:
            raise RuntimeError(f"unexpected conflict on {key!r}")
        return r
    return op, a.close


def _fmt(s: Sample) -> dict[str, Any]:
    return {"ops_per_s": round(s.ops_per_s, 1),
            "p50_ms": round((s.p50_us or 0) / 1000, 3), "p99_ms": round((s.p99_us or 0) / 1000, 3),
            "n": s.n, "runs": s.runs}


def measure_writes(cfg: Settings, base: Path, size: int) -> dict[str, Any]:
    cluster = _cluster(base, size)
    try:
        eps = cluster.endpoints
        out: dict[str, Any] = {"latency_via": "leader" if cluster.leader() == 0 else "follower"}
        for name, factory in (("etcd3", cas_worker), ("adapter", adapter_worker)):
            op, close = factory(eps[:1], 300)  # both clients through the same member

            def timed(r: int, op: Callable[[int], object] = op) -> Sample:
                return time_ops(op, cfg.write_ops, start=r * 1_000_000)
            try:
                out[f"latency_{name}"] = _fmt(repeat(cfg.runs, timed))
            finally:
                close()
        for procs in (1, cfg.procs):
            def run_once(_r: int, procs: int = procs) -> Sample:
                return throughput("benchmarks.etcd_floor:cas_worker", (eps, 300), procs,
                                  cfg.seconds)
            out[f"throughput_etcd3_{procs}w"] = _fmt(repeat(cfg.runs, run_once))
        return out
    finally:
        cluster.stop()


def _load(c: Any, values: list[tuple[bytes, bytes]]) -> None:
    tx = c.transactions
    for i in range(0, len(values), LOAD_BATCH):
        c.transaction(compare=[], success=[tx.put(k, v) for k, v in values[i:i + LOAD_BATCH]],
                      failure=[])


def _settled_size(cluster: Any, c: Any) -> int:
    """Database bytes once history is compacted and the file defragmented."""
    rev = c.get_response(b"\0").header.revision
    cluster.compact(rev)
    cluster.defragment()
    return int(c.status().db_size)


def _flows(n: int, seed: int) -> list[tuple[bytes, bytes]]:
    """Flows as the other benchmarks make them (3-5 plans, a third Korean names)."""
    rng, taken, out = random.Random(seed), dict[str, Any](), []
    for i in range(n):
        fid = new_id(rng, taken)
        taken[fid] = 1
        out.append((PREFIX + fid.encode(), orjson.dumps(make_flow(rng, fid, i))))
    return out


def _flows_300(n: int, seed: int) -> list[tuple[bytes, bytes]]:
    """The same keys with a JSON value of exactly 300 bytes."""
    out = []
    for key, value in _flows(n, seed):
        doc = orjson.loads(value)
        doc["plans"], doc["name"] = [], "x"
        short = orjson.dumps(doc)
        doc["name"] = "x" * (300 - len(short) + 1)
        out.append((key, orjson.dumps(doc)))
    assert all(len(v) == 300 for _, v in out)
    return out


def measure_storage(cfg: Settings, base: Path, flows: int, make: Callable[
        [int, int], list[tuple[bytes, bytes]]], reads: bool) -> dict[str, Any]:
    cluster = _cluster(base, 1)
    c = _etcd3_client(cluster.endpoints[0])
    try:
        out: dict[str, Any] = {"flows": flows}
        empty = _settled_size(cluster, c)
        data = make(flows, 1)
        out["value_bytes_mean"] = round(statistics.mean(len(v) for _, v in data), 1)
        out["key_bytes_mean"] = round(statistics.mean(len(k) for k, _ in data), 1)
        t = time.perf_counter()
        _load(c, data)
        out["load_s"] = round(time.perf_counter() - t, 2)
        _load(c, data)  # every flow updated once: compaction must drop the old versions
        full = _settled_size(cluster, c)
        per_flow = (full - empty) / flows
        out.update(db_empty_bytes=empty, db_bytes=full, bytes_per_flow=round(per_flow, 1),
                   flows_in_8gib=int(ETCD_SUGGESTED_MAX_DB / per_flow),
                   flows_in_2gib_default_quota=int((2 << 30) / per_flow))
        if reads:
            out.update(measure_range_reads(cfg, cluster, c, flows))
        return out
    finally:
        c.close()
        cluster.stop()


def measure_range_reads(cfg: Settings, cluster: Any, c: Any, flows: int) -> dict[str, Any]:
    from flowd.etcd_adapter import EtcdAdapter
    out: dict[str, Any] = {}
    with EtcdAdapter(cluster.endpoints, timeout=120) as a:
        for page in (1000, 10000, flows):
            def read(_r: int, page: int = page) -> float:
                t = time.perf_counter()
                got = a.range_prefix(PREFIX, page_size=page)
                assert len(got.kvs) == flows
                return time.perf_counter() - t
            out[f"range_read_adapter_page{page}_s"] = round(
                statistics.median(read(r) for r in range(cfg.runs)), 3)

    for order in (None, "ascend"):
        def one_request(_r: int, order: str | None = order) -> float:
            t = time.perf_counter()
            got = list(c.get_prefix(PREFIX, sort_order=order, sort_target="create"))
            assert len(got) == flows
            return time.perf_counter() - t
        name = "sorted_by_create" if order else "unsorted"
        out[f"range_read_etcd3_one_request_{name}_s"] = round(
            statistics.median(one_request(r) for r in range(cfg.runs)), 3)
    out["txn_range_compare_whole_prefix_ms"] = round(_range_compare_ms(cluster, flows), 2)
    return out


def _range_compare_ms(cluster: Any, flows: int) -> float:
    """One put guarded by a compare over every flow key: etcd reads the whole range."""
    from flowd.etcd_adapter import EtcdAdapter
    from flowd.etcd_types import Compare, Put, prefix_end
    with EtcdAdapter(cluster.endpoints, timeout=120) as a:
        times = []
        for _ in range(20):
            rev = a.current_revision()
            t = time.perf_counter()
            r = a.txn([Compare.range_unchanged_since(PREFIX, prefix_end(PREFIX), rev)],
                      [Put(b"/flowd/default/meta", b"x")])
            times.append(time.perf_counter() - t)
            assert r.succeeded
        return statistics.median(times) * 1000


def run(cfg: Settings, base: Path, flows: int) -> dict[str, Any]:
    result: dict[str, Any] = {"machine": machine.describe(base), "etcd": {},
                              "load_before": machine.loadavg()}
    for size in (1, 3):
        print(f"writes on {size} member(s) ...", flush=True)
        result["etcd"][f"{size}_members"] = measure_writes(cfg, base, size)
        result["etcd"]["version"] = machine._version(["etcd", "--version"])
        print(orjson.dumps(result["etcd"][f"{size}_members"], option=orjson.OPT_INDENT_2)
              .decode(), flush=True)
    for name, make, reads in (("storage_flows", _flows, True),
                              ("storage_300b_values", _flows_300, False)):
        print(f"{name}: {flows} flows ...", flush=True)
        result["etcd"][name] = measure_storage(cfg, base, flows, make, reads)
        print(orjson.dumps(result["etcd"][name], option=orjson.OPT_INDENT_2).decode(), flush=True)
    result["load_after"] = machine.loadavg()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the figures here (JSON)")
    args = parser.parse_args(argv)
    cfg = load()
    flows = int(os.environ.get("FLOWD_BENCH_ETCD_FLOWS", "10000" if cfg.quick else "100000"))
    with tempfile.TemporaryDirectory(prefix="etcd-floor-") as tmp:
        result = run(cfg, Path(tmp), flows)
    if args.out:
        args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
