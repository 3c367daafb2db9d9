"""The request path alone, quickly: daemon CPU per strict write and writes/s at 1 and N
writer processes, next to Redis ``appendfsync always`` and the wire's floor (a bare
ZeroMQ group commit: :mod:`benchmarks.peers.zmq_echo`) in the same run (issue 12).

    .venv/bin/python -m benchmarks.reqpath_quick [seconds] [procs] [--profile DIR]

``--profile DIR`` records the daemon with py-spy (if installed) for each run, as
flame-graph-ready ``collapsed`` stacks in DIR. Without it, each run also says
where a write's time goes on the loop thread (on a CPU, waiting for one: Linux
schedstat) and how much CPU the other threads (ZeroMQ's I/O thread) took. A
development aid next to ``make bench`` (whose ``throughput`` and ``scale`` steps
measure the same figures).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from .daemon import Flowd
from .datagen import write_dataset
from .peers import redis_peer
from .scale_bench import floor_writes, flowd_writes, redis_writes


def py_spy(profile: Path, name: str) -> Callable[[Flowd], Callable[[], None]]:
    """Record the daemon with py-spy while the writers run (raw stacks in ``profile``)."""
    def start(d: Flowd) -> Callable[[], None]:
        assert d.proc is not None
        spy = subprocess.Popen(["py-spy", "record", "--pid", str(d.proc.pid), "--format",
                                "raw", "--threads", "--nonblocking", "-o",
                                str(profile / f"{name}.txt"), "--rate", "500"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def stop() -> None:
            spy.send_signal(2)
            spy.wait(30)
        return stop
    return start


def _schedstat(pid: int) -> tuple[int, int]:
    """(ns on a CPU, ns runnable but waiting for a CPU) of the daemon's main thread."""
    try:
        on, waiting = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[:2]
    except (OSError, ValueError):
        return 0, 0
    return int(on), int(waiting)


def loop_split(label: str) -> Callable[[Flowd], Callable[[], None]]:
    """Print the loop thread's time per write and the rest of the daemon's CPU."""
    def start(d: Flowd) -> Callable[[], None]:
        assert d.proc is not None
        pid = d.proc.pid
        sched0, cpu0, rev0 = _schedstat(pid), d.cpu_seconds(), d.stats()["revision"]

        def stop() -> None:
            sched1, cpu1 = _schedstat(pid), d.cpu_seconds()
            writes = max(1, d.stats()["revision"] - rev0)
            on, waiting = ((b - a) / writes / 1e3 for a, b in zip(sched0, sched1, strict=True))
            other = (cpu1 - cpu0) * 1e6 / writes - on
            print(f"  {label}: loop thread on a CPU {on:.0f} us/write, waiting for one "
                  f"{waiting:.0f}; other threads {other:.0f} us/write", flush=True)
        return stop
    return start


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
            binary = redis_peer.find_server(False)
            redis = redis_writes(binary, ds, work, procs, seconds) if binary else 0.0
            floor_us, floor = floor_writes(work, procs, seconds)
            print(f"{procs} procs wire floor: {floor_us:6.1f} us CPU/write, {floor:8.0f} "
                  f"writes/s; ratio to redis {floor / redis if redis else float('nan'):.2f}",
                  flush=True)
            for mode in modes:
                label = f"{mode}-{procs}"
                spy = py_spy(profile, label) if profile is not None else loop_split(label)
                us, rate = flowd_writes(ds, work, procs, seconds, mode, spy)
                ratio = rate / redis if redis else float("nan")
                print(f"{procs} procs {mode}: {us:6.1f} us CPU/write, {rate:8.0f} writes/s;"
                      f" redis always {redis:8.0f}/s; ratio {ratio:.2f}; to the floor "
                      f"{rate / floor:.2f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
