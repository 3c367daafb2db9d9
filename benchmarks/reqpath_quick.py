"""The request path alone, quickly: daemon CPU per strict write and writes/s at 1 and N
writer processes, next to Redis ``appendfsync always`` in the same run (issue 12).

    .venv/bin/python -m benchmarks.reqpath_quick [seconds] [procs] [--profile DIR]

``--profile DIR`` records the daemon with py-spy (if installed) for each run, as
flame-graph-ready ``collapsed`` stacks in DIR. A development aid next to ``make
bench`` (whose ``throughput`` and ``scale`` steps measure the same figures).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .daemon import Flowd
from .datagen import write_dataset
from .peers import redis_peer
from .workloads import throughput


def flowd_run(ds: object, work: Path, procs: int, seconds: float, mode: str,
              profile: Path | None) -> tuple[float, float]:
    data_dir = work / f"q-{mode}-{procs}"
    ds.copy_to(data_dir)  # type: ignore[attr-defined]
    with Flowd(data_dir, mode) as d:
        spy = None
        if profile is not None:
            assert d.proc is not None
            spy = subprocess.Popen(["py-spy", "record", "--pid", str(d.proc.pid), "--format",
                                    "raw", "--threads", "--nonblocking", "-o",
                                    str(profile / f"{mode}-{procs}.txt"), "--rate", "500"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu0 = d.cpu_seconds()
        before = d.stats()["revision"]
        s = throughput("benchmarks.flowd_bench:writer", (str(data_dir),), procs, seconds)
        writes = d.stats()["revision"] - before
        cpu = d.cpu_seconds() - cpu0
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
    shutil.rmtree(data_dir, ignore_errors=True)
    return cpu / max(1, writes) * 1e6, s.ops_per_s


def redis_run(ds: object, work: Path, procs: int, seconds: float) -> float:
    binary = redis_peer.find_server(False)
    if binary is None:
        return 0.0
    with redis_peer.RedisServer(binary, "always", work) as srv:
        srv.fill(ds)  # type: ignore[arg-type]
        return throughput("benchmarks.peers.redis_peer:writer", (srv.socket,), procs,
                          seconds).ops_per_s


def main(argv: list[str]) -> int:
    profile = None
    if "--profile" in argv:
        i = argv.index("--profile")
        profile = Path(argv[i + 1])
        profile.mkdir(parents=True, exist_ok=True)
        argv = argv[:i] + argv[i + 2:]
    seconds = float(argv[0]) if argv else 3.0
    many = int(argv[1]) if len(argv) > 1 else 8
    modes = argv[2].split(",") if len(argv) > 2 else ["strict"]
    work = Path(tempfile.mkdtemp(prefix="flowd-reqpath-"))
    try:
        ds = write_dataset(work / "flows-1000.json", 1000)
        for procs in (1, many):
            redis = redis_run(ds, work, procs, seconds)
            for mode in modes:
                us, rate = flowd_run(ds, work, procs, seconds, mode, profile)
                ratio = rate / redis if redis else float("nan")
                print(f"{procs} procs {mode}: {us:6.1f} us CPU/write, {rate:8.0f} writes/s;"
                      f" redis always {redis:8.0f}/s; ratio {ratio:.2f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
