"""What an old tool's rewrite of flows.json costs flowd at the big size, and what the
memory of written files weighs there.

In the bench process (no sockets: the merge runs on the server loop exactly
like this): flowd's Daemon on a copy of the generated store writes 100 files
with 10 changed flows each (the sidecar grows by what changed), then the
seed's own manager (benchmarks.peers.seed) loads flows.json, renames 10 flows,
deletes 10, adds 10 and saves it the seed's way while flowd renamed one of
those 10 itself (a conflict). The merge is timed from "flows.json changed" to
"journaled": holding the file aside, parsing it (in a child process,
flowd.stray_parse), reading the child's lines a step at a time as the server
loop does between requests, picking the base, merging, writing the conflict
aside, journaling; and the loop's share of it: its time in all and its longest
single step (how long a request may wait). Baseline in the same run: parsing
the same tool file with orjson alone, GC paused like flowd's loader (what any
reader of the file pays at least).
"""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path

import orjson

from flowd import ops
from flowd.config import Config as DaemonConfig
from flowd.daemon import Daemon
from flowd.storage import memory_file

from .datagen import Dataset
from .peers.seed import SeedManager
from .results import Results
from .settings import Settings

FILES, CHANGES, EDITS = 100, 10, 10


def _write(rt: Daemon, op: str, **args: object) -> object:
    txn = rt.store.begin()
    result = ops.WRITES[op](txn, args)
    rt.service.commit_internal(txn)
    return result


def _old_tool_saves(rt: Daemon, data_dir: Path, victims: list[str]) -> None:
    """The seed's manager renames, deletes and adds; flowd renames one of the same."""
    tool = SeedManager(str(data_dir / "flows.json"))
    for fid in victims[:EDITS]:
        tool.flows[fid].name += " (tool)"
    for fid in victims[EDITS:2 * EDITS]:
        del tool.flows[fid]
    for i in range(EDITS):
        tool.add_flow(f"tool {i}")
    _write(rt, "update_flow", flow_id=victims[0], name="flowd's own")
    tool.save(force=True)


def _merge_as_the_loop_does(rt: Daemon) -> tuple[float, float, float]:
    """check_stray, then the loop's steps once the child has parsed the file: the
    wall time to the journaled merge, the loop's time in all, its longest turn."""
    parsed = threading.Event()
    rt.strays.on_ready = parsed.set
    gc.collect()  # the bench's own garbage (the seed tool's copy), not the daemon's
    t0 = time.perf_counter()
    rt.check_stray()
    loop = longest = time.perf_counter() - t0
    for _ in range(10_000_000):
        if not rt.strays.busy:
            break
        if not parsed.wait(600):
            raise RuntimeError("the parsing child did not finish")
        t = time.perf_counter()
        rt.strays.step()
        took = time.perf_counter() - t
        loop, longest = loop + took, max(longest, took)
    rt.strays.on_ready = None
    return time.perf_counter() - t0, loop, longest


def stray_merge(ds: Dataset, st: Settings, work: Path, res: Results) -> None:
    n = ds.size
    data_dir = work / f"stray-{n}"
    ds.copy_to(data_dir)
    rt = Daemon(DaemonConfig(data_dir=data_dir, snapshot_interval=3600.0))
    rt.open()
    try:
        sidecar = data_dir / memory_file.NAME
        res.put("memory_bytes_1", "flowd", n, sidecar.stat().st_size)
        ids = list(rt.store.flows)
        for k in range(FILES):
            for j in range(CHANGES):
                _write(rt, "update_flow", flow_id=ids[(k * CHANGES + j) % len(ids)],
                       name=f"bench {k}.{j}")
            assert rt.snap.write_now(rt.store).installed is not None
        res.put("memory_bytes", "flowd", n, sidecar.stat().st_size)
        res.put("memory_ram_estimate", "flowd", n, rt.memory.bytes)
        _old_tool_saves(rt, data_dir, ids[-3 * EDITS:])
        data = (data_dir / "flows.json").read_bytes()
        gc.disable()  # as flowd's loader does
        t0 = time.perf_counter()
        orjson.loads(data)
        res.put("stray_parse", "orjson.loads", n, time.perf_counter() - t0)
        gc.enable()
        wall, loop, longest = _merge_as_the_loop_does(rt)
        res.put("stray_merge", "flowd", n, wall)
        res.put("stray_loop", "flowd", n, loop)
        res.put("stray_step_max", "flowd", n, longest)
        report = rt.service.stats.strays[-1]
        want = (EDITS, EDITS - 1, EDITS, 1)
        got = (report["added"], report["updated"], report["deleted"], report["conflicts"])
        if got != want:
            raise RuntimeError(f"the merge did {got}, expected {want}: {report}")
    finally:
        rt.close()
