"""The cost of CURVE (issue 14): round-trip reads and durable writes, plain tcp vs CURVE tcp.

Two daemons on copies of the same store, both on 127.0.0.1 tcp, one with
``--curve-dir``; the runs alternate between them so that a load change on
the machine hits both alike. The figure that matters is the ratio (CURVE
over plain tcp) of the same run, not the absolute numbers.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from flowd_client import FlowClient
from flowd_client.cli import main as flowctl
from flowd_client.curve import ENV_SECRET, ENV_SERVER

from .daemon import Flowd
from .datagen import Dataset
from .results import ANY_SIZE, Results
from .settings import Settings
from .workloads import Sample, median_sample, time_ops

SYSTEMS = ("flowd tcp", "flowd CURVE tcp")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _make_keys(curve: Path, keys: Path) -> dict[str, str]:
    """A server pair (as flowd would make it) and one allowed client; its env."""
    commands = [["keys", "new", "server", "--dir", str(curve)],
                ["keys", "new", "bench", "--dir", str(keys)],
                ["keys", "allow", str(keys / "bench.key"), "--curve-dir", str(curve)]]
    for argv in commands:
        with contextlib.redirect_stdout(io.StringIO()):
            code = flowctl(argv)
        if code != 0:
            raise RuntimeError(f"flowctl {' '.join(argv)} failed ({code})")
    return {ENV_SECRET: str(keys / "bench.key_secret"), ENV_SERVER: str(curve / "server.key")}


def _measure(c: FlowClient, ids: list[str], st: Settings, r: int) -> tuple[Sample, Sample]:
    k = len(ids)
    reads = time_ops(lambda i: c.get_flow_by_id(ids[i % k]), st.read_ops, start=r * st.read_ops)
    writes = time_ops(lambda i: c.add_flow(f"curve bench {i}"), st.write_ops, warmup=10)
    return reads, writes


def tcp_vs_curve(ds: Dataset, st: Settings, work: Path, res: Results) -> None:
    base = work / "curve-bench"
    env = _make_keys(base / "curve", base / "keys")
    endpoints = {s: f"tcp://127.0.0.1:{_port()}" for s in SYSTEMS}
    extra = {SYSTEMS[0]: (), SYSTEMS[1]: ("--curve-dir", str(base / "curve"))}
    samples: dict[tuple[str, str], list[Sample]] = {}
    keys = {SYSTEMS[0]: {}, SYSTEMS[1]: {"curve_secret": env[ENV_SECRET],
                                         "curve_server": env[ENV_SERVER]}}
    with contextlib.ExitStack() as stack:
        clients = {}
        for i, system in enumerate(SYSTEMS):
            data_dir = base / f"data{i}"
            ds.copy_to(data_dir)
            # the keys in the environment only for the CURVE daemon's readiness probe
            with _environ(**(env if keys[system] else {})):
                stack.enter_context(Flowd(data_dir, "strict", "--endpoint", endpoints[system],
                                          *extra[system]))
            clients[system] = stack.enter_context(
                FlowClient(endpoint=endpoints[system], timeout=60.0, **keys[system]))
        for r in range(max(1, st.runs)):
            for system in SYSTEMS:  # alternate: a load change hits both alike
                reads, writes = _measure(clients[system], ds.ids, st, r)
                samples.setdefault(("curve_read", system), []).append(reads)
                samples.setdefault(("curve_write", system), []).append(writes)
    for (workload, system), runs in samples.items():
        res.put(workload, system, ANY_SIZE, median_sample(runs))
