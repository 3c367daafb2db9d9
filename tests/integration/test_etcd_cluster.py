"""The etcd test helper itself: no member outlives the process that started it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from etcd_cluster import SKIP_LINE, etcd_binary

TESTS = Path(__file__).resolve().parents[1]

STARTER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from etcd_cluster import EtcdCluster
c = EtcdCluster(Path(sys.argv[2]), 3).start()
print(" ".join(str(m.proc.pid) for m in c.members), flush=True)
time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_members_die_with_a_sigkilled_test_process(tmp_path: Path) -> None:
    if etcd_binary() is None:
        pytest.skip(SKIP_LINE)
    proc = subprocess.Popen([sys.executable, "-c", STARTER, str(TESTS), str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 3 and all(_alive(p) for p in pids)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in pids)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for p in pids:
            if _alive(p):
                os.kill(p, signal.SIGKILL)


def test_a_killed_member_restarts_on_its_data(etcd_cluster) -> None:
    cluster = etcd_cluster(3)
    leader = cluster.leader()
    victim = (leader + 1) % 3  # a follower: no election to wait for
    cluster.kill(victim)
    assert not cluster.members[victim].running()
    with cluster.client(leader) as c:
        c.put("/k", "written while it was down")
    cluster.restart(victim)
    with cluster.client(victim) as c:
        value, _ = c.get("/k")  # linearizable: the member is back in the cluster
        assert value == b"written while it was down"
    assert cluster.leader() in range(3)
