"""Run flowd with a GIL probe thread: ``python -m benchmarks.gil_probe OUT.json FLOWD_ARGS...``

The probe sleeps 1 ms in a loop and measures how late it wakes. A thread
that wakes late was kept from the GIL: the lateness bounds the longest
stretch some other thread (the loop, the snapshot writer) held it without
letting go. C code that never releases the GIL (a dict copy, one orjson
call, a cyclic-GC pass) shows up whole; pure Python is preempted every
switch interval (5 ms by default), so a lateness below that is noise, not
a hold. A wake-up is also late when the thread waited for a CPU (on 2 busy
cores: the snapshot writer, the loop, the client, the kernel's writeback):
the probe reads its own CPU and run-queue times (``/proc/thread-self/schedstat``)
around every tick, so the part of a lateness spent runnable but not running
(or running: a page fault) is told apart from the part spent asleep waiting
for the GIL. It also times every
cyclic-GC collection (``gc.callbacks``), which is how the issue found its
600 ms gen0 passes. It is a benchmark probe: it
lives here, not in the daemon, and flowd runs unchanged inside it.

Every half second the figures go to OUT.json (written whole, then renamed):
each late wake-up with its wall time (so a benchmark picks its own window)
and the probe thread's native id (so its CPU can be left out of the
daemon's).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

TICK = 0.001
#: wake-ups later than this are kept (wall time, lateness, whether a snapshot ran)
LATE = 0.002
KEEP = 20_000


class Probe:
    def __init__(self, out: Path) -> None:
        self.out = out
        #: (wall time, lateness, a snapshot thread alive, of which not asleep: on a CPU or
        #: waiting for one)
        self.lates: list[tuple[float, float, bool, float]] = []
        self.wakes = 0
        #: cyclic-GC passes over 1 ms: (wall time, generation, seconds, thread, collected)
        self.gcs: list[tuple[float, int, float, str, int]] = []
        self._gc_t0 = 0.0
        self.tid = 0

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_t0 = time.perf_counter()
            return
        took = time.perf_counter() - self._gc_t0
        if took > 0.001 and len(self.gcs) < KEEP:
            self.gcs.append((time.time(), info.get("generation", -1), took,
                             threading.current_thread().name, info.get("collected", 0)))

    def run(self) -> None:
        self.tid = threading.get_native_id()
        now = time.perf_counter
        next_dump = now() + 0.5
        awake = _awake_seconds()
        while True:
            t0 = now()
            was_awake = awake()
            time.sleep(TICK)
            late = now() - t0 - TICK
            self.wakes += 1
            if late > LATE and len(self.lates) < KEEP:
                snap = any(t.name == "snapshot" for t in threading.enumerate())
                self.lates.append((time.time(), late, snap, awake() - was_awake))
            if t0 >= next_dump:
                self.dump()
                next_dump = t0 + 0.5

    def dump(self) -> None:
        doc = {"tid": self.tid, "wakes": self.wakes, "lates": self.lates,
               "gcs": self.gcs}
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.out)


def _awake_seconds() -> Any:
    """Seconds this thread has been on a CPU or waiting for one so far (0 where the
    kernel does not say: then every lateness counts as a GIL wait)."""
    try:
        fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
    except OSError:
        return lambda: 0.0

    def awake() -> float:
        on_cpu, waiting, _ = os.pread(fd, 64, 0).split()
        return (int(on_cpu) + int(waiting)) / 1e9
    return awake


def main(argv: list[str]) -> int:
    out, *flowd_args = argv
    probe = Probe(Path(out))
    gc.callbacks.append(probe.on_gc)
    threading.Thread(target=probe.run, name="gil-probe", daemon=True).start()
    from flowd.__main__ import main as flowd_main
    return flowd_main(flowd_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
