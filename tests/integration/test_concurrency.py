"""Many tools at once: separate processes writing through the client at the same time."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from flowd_client import FlowClient

PROCS = 8
START_WAIT = 60.0

#: A tool: waits for the start signal (so every process writes at once), then writes.
WRITER = r"""
import json, os, sys, time
from flowd_client import FlowClient
data_dir, go, tag, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
open(f"{go}.ready-{os.getpid()}", "w").close()  # imported: polling for the signal now
deadline = time.monotonic() + 60
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.005)
with FlowClient(data_dir, timeout=30) as c:
    ids = [c.add_flow(f"{tag}-{i}", [{"tag": tag, "i": i}]) for i in range(n)]
print(json.dumps(ids))
"""

#: Read-modify-write of a counter in a plan, retried on ConflictError (CAS), either with
#: update_flow(if_revision=...) or with a batch guarded by a check; "-cached" reads from
#: the cached client's mirror, which may lag: a conflict then has to bring it up to date.
INCREMENTER = r"""
import json, os, sys, time
from flowd_client import ConflictError, FlowClient
data_dir, go, fid, n, mode = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
cache = mode.endswith("-cached")
open(f"{go}.ready-{os.getpid()}", "w").close()  # imported: polling for the signal now
deadline = time.monotonic() + 60
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.005)
conflicts = 0
with FlowClient(data_dir, timeout=30, cache=cache) as c:
    for _ in range(n):
        for attempt in range(10_000):
            flow = c.get_flow_by_id(fid)
            plans = [{**flow.plans[0], "count": flow.plans[0]["count"] + 1}]
            try:
                if mode.startswith("cas"):
                    c.update_flow(fid, plans=plans, if_revision=flow.revision)
                else:
                    with c.batch() as b:
                        b.check(fid, flow.revision).update_flow(fid, plans=plans)
                break
            except ConflictError:
                conflicts += 1
        else:
            sys.exit("gave up after 10000 conflicts")
print(json.dumps({"conflicts": conflicts}))
"""


def run_at_once(script: str, argvs: list[list[str]], go: Path) -> list[str]:
    """Start one process per argv, release them together, return their stdout."""
    procs = [subprocess.Popen([sys.executable, "-c", script, *argv], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for argv in argvs]
    try:
        deadline = time.monotonic() + START_WAIT  # every one imported and polling
        while (len(list(go.parent.glob(f"{go.name}.ready-*"))) < len(procs)
               and time.monotonic() < deadline):
            time.sleep(0.01)
        go.touch()
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=90)
            assert p.returncode == 0, err
            outs.append(out)
        return outs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_processes_writing_at_once_lose_nothing(daemon, tmp_path: Path) -> None:
    n = 40
    go = tmp_path / "go"
    argvs = [[str(daemon.data_dir), str(go), f"p{k}", str(n)] for k in range(PROCS)]
    outs = run_at_once(WRITER, argvs, go)
    per_proc = [json.loads(out) for out in outs]
    ids = [fid for ids in per_proc for fid in ids]
    assert len(ids) == PROCS * n and len(set(ids)) == len(ids)  # all unique
    with daemon.client() as c:
        flows = c.get_all_flows()
        assert set(flows) == set(ids)
        order = list(flows)
        for k, mine in enumerate(per_proc):  # creation order respects each tool's order
            assert sorted(mine, key=order.index) == mine
            for i, fid in enumerate(mine):
                assert flows[fid].name == f"p{k}-{i}" and flows[fid].plans == [
                    {"tag": f"p{k}", "i": i}]
        assert c.current_flow_id in {mine[-1] for mine in per_proc}
        stats = c.stats()
        rev = stats["revision"]
    assert daemon.stop() == 0  # clean stop: everything in flows.json
    doc = json.loads((daemon.data_dir / "flows.json").read_text(encoding="utf-8"))
    assert list(doc["flows"]) == order and doc["meta"]["revision"] == rev
    for fid in ids:
        assert doc["flows"][fid]["name"] == flows[fid].name
    daemon.start()
    with daemon.client() as c:
        assert list(c.get_all_flows()) == order


def test_read_modify_write_with_cas_never_loses_an_update(daemon, tmp_path: Path) -> None:
    per_proc, procs = 25, 6
    with daemon.client() as c:
        fid = c.add_flow("counter", [{"count": 0}])
    go = tmp_path / "go"
    modes = ["cas", "batch", "cas-cached"] * (procs // 3)
    argvs = [[str(daemon.data_dir), str(go), fid, str(per_proc), m] for m in modes]
    outs = run_at_once(INCREMENTER, argvs, go)
    per = [json.loads(o)["conflicts"] for o in outs]
    conflicts = sum(per)
    with daemon.client() as c:
        flow = c.get_flow_by_id(fid)
        assert flow.plans == [{"count": procs * per_proc}]
        # every successful increment was exactly one write of that flow
        writes = c.stats()["requests"]
        assert writes.get("update_flow", 0) + writes.get("batch", 0) == (
            procs * per_proc + conflicts)
    print(f"conflicts retried per process: {dict(zip(modes, per, strict=True))}")


def test_blind_writes_from_many_processes_keep_the_store_consistent(daemon,
                                                                    tmp_path: Path) -> None:
    """Adds, renames, plan appends and deletes from several processes at once; then the
    store, the name index and a restart agree."""
    script = r"""
import os, sys, time
from flowd_client import FlowClient
data_dir, go, tag = sys.argv[1], sys.argv[2], sys.argv[3]
open(f"{go}.ready-{os.getpid()}", "w").close()  # imported: polling for the signal now
deadline = time.monotonic() + 60
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.005)
with FlowClient(data_dir, timeout=30) as c:
    keep = c.add_flow(f"{tag}-keep")
    for i in range(30):
        fid = c.add_flow(f"{tag}-tmp")
        c.append_plan(keep, {"i": i})
        c.update_flow(fid, name=f"{tag}-renamed")
        c.set_current(keep)
        if i % 2:
            c.delete_flow(fid)
"""
    go = tmp_path / "go"
    run_at_once(script, [[str(daemon.data_dir), str(go), f"w{k}"] for k in range(4)], go)
    with daemon.client() as c:
        flows = c.get_all_flows()
        assert len(flows) == 4 * (1 + 15)
        for k in range(4):
            keep = c.find_by_name(f"w{k}-keep")
            assert len(keep) == 1 and [p["i"] for p in keep[0].plans] == list(range(30))
            assert len(c.find_by_name(f"w{k}-renamed")) == 15
            assert c.find_by_name(f"w{k}-tmp") == []
        before = (list(flows), c.current_flow_id)
    assert daemon.stop() == 0
    daemon.start()
    with FlowClient(daemon.data_dir) as c:
        assert (list(c.get_all_flows()), c.current_flow_id) == before
