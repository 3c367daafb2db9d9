"""No reply shows a write that is not yet durable: real daemons, real clients, SIGKILL.

Two tests. The first holds a real daemon's group commit at its fsync (the
``fsio`` seam, patched by ``held_fsync.py``) and checks that a compare-and-set
refused because of a staged write is answered after that write, and never
with a revision whose fsync failed. The second is a history check: client
processes read, write and compare-and-set one flow while the daemon is
SIGKILLed and restarted; afterwards no reply may show a revision that a
request started after it cannot see (the single-register model: every write
bumps the flow's revision by one, and only this flow is written, so each
revision a reply shows is a point in one total order).

Run as a program, this file is one history worker:
``python test_linearizable.py DATA_DIR FLOW_ID OUT_FILE STOP_FILE SEED``.
"""

from __future__ import annotations

import bisect
import json
import os
import random
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
from flowd_client.protocol import build_request
from raw_socket import Raw

HERE = Path(__file__).parent
WORKERS = 4
HISTORY_SECONDS = float(os.environ.get("FLOWD_HISTORY_SECONDS", "8"))
KILLS = 3


# ------------------------------------------------------------------ held fsync


class HeldFsync:
    """The two FIFOs of held_fsync.py: wait for an fsync to start, then decide it."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for name in ("entered", "grant"):
            os.mkfifo(directory / name)
        self.dir = directory
        self.entered = os.open(directory / "entered", os.O_RDWR | os.O_NONBLOCK)
        self.grant = os.open(directory / "grant", os.O_RDWR)

    def wait_entered(self, timeout: float = 20.0) -> None:
        ready, _, _ = select.select([self.entered], [], [], timeout)
        assert ready, "the daemon never reached its journal fsync"
        assert os.read(self.entered, 1) == b"e"

    def let_pass(self) -> None:
        os.write(self.grant, b".")

    def make_fail(self) -> None:
        os.write(self.grant, b"!")


def send(raw: Raw, rid: int, op: str, args: dict[str, Any]) -> None:
    raw.sock.send(build_request(rid, op, args))


def replies_within(raw: Raw, seconds: float) -> list[dict[str, Any]]:
    out = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        got = raw.recv(left)
        if got is None:
            break
        out.append(got)
    return out


def stage_write_then_cas(raw: Raw, fsync: HeldFsync, flow_id: str, base: int,
                         first: int) -> None:
    """Hold one group at its fsync while a write and a CAS that conflicts with it queue up
    on one socket (so in that order), then let the held group finish: the daemon drains
    both into the next group, whose fsync is held in turn."""
    send(raw, first, "update_flow", {"flow_id": flow_id, "name": f"held-{first}"})
    fsync.wait_entered()
    send(raw, first + 1, "update_flow", {"flow_id": flow_id, "name": f"a-{first}"})
    send(raw, first + 2, "update_flow", {"flow_id": flow_id, "name": f"b-{first}",
                                         "if_revision": base + 1})
    fsync.let_pass()
    assert raw.recv()["id"] == first
    fsync.wait_entered()


@pytest.mark.daemon_errors(r"injected by held_fsync")
def test_a_conflict_with_a_staged_write_is_answered_after_its_fsync(make_daemon,
                                                                    tmp_path: Path) -> None:
    fsync = HeldFsync(tmp_path / "fifo")
    d = make_daemon()
    d.command = [sys.executable, str(HERE / "held_fsync.py"), str(fsync.dir)]
    d.start()
    fsync.let_pass()
    with d.client(timeout=20) as c:
        fid = c.add_flow("register")
        base = c.get_flow_by_id(fid).revision
    fsync.wait_entered()  # the add's fsync, already granted
    raw = Raw(d.data_dir, zmq.DEALER)
    try:
        stage_write_then_cas(raw, fsync, fid, base, 100)
        early = replies_within(raw, 1.0)
        assert early == [], f"answered while the write it saw was not durable: {early}"
        fsync.let_pass()
        write, cas = raw.recv(), raw.recv()
        assert (write["id"], cas["id"]) == (101, 102), (write, cas)
        assert cas["error"]["code"] == "CONFLICT"
        assert cas["error"]["data"]["current_revision"] == write["rev"] == base + 2

        # the same with the held fsync failing: no reply may show the abandoned revision
        stage_write_then_cas(raw, fsync, fid, base + 2, 200)
        fsync.make_fail()
        write, cas = raw.recv(), raw.recv()
        assert (write["error"]["code"], cas["error"]["code"]) == ("UNAVAILABLE", "UNAVAILABLE")
        assert "current_revision" not in json.dumps(cas)
    finally:
        raw.close()
    with d.client(timeout=20) as c:
        assert c.get_flow_by_id(fid).revision == base + 3  # "held-200" is the last durable
    assert d.stop() == 0


# ------------------------------------------------------------------ history check


def worker(data_dir: str, flow_id: str, out: str, stop: str, seed: int) -> int:
    """Random reads, blind writes and compare-and-sets; one JSON line per finished op."""
    from flowd_client import ConflictError, FlowClient, FlowdError, UnavailableError

    rng = random.Random(seed)
    client = FlowClient(data_dir, timeout=3.0)
    deadline = time.monotonic() + 60
    with open(out, "w", encoding="utf-8") as f:
        last = 0
        n = 0
        while not os.path.exists(stop) and time.monotonic() < deadline:
            kind = rng.choice(("read", "write", "cas", "cas"))
            n += 1
            t0 = time.monotonic()
            try:
                if kind == "read":
                    rev = client.get_flow_by_id(flow_id).revision
                elif kind == "write":
                    rev = client.update_flow(flow_id, name=f"{seed}-{n}").revision
                else:
                    rev = client.update_flow(flow_id, name=f"{seed}-{n}",
                                             if_revision=last).revision
            except ConflictError as exc:
                kind, rev = "conflict", exc.current_revision
            except UnavailableError:
                continue  # outcome unknown (the daemon was killed): shows nothing
            except FlowdError as exc:
                f.write(json.dumps({"kind": "unexpected", "error": str(exc)}) + "\n")
                continue
            t1 = time.monotonic()
            f.write(json.dumps({"kind": kind, "rev": rev, "t0": t0, "t1": t1,
                                "asked": last if kind in ("cas", "conflict") else None})
                    + "\n")
            last = rev
    client.close()
    return 0


def stale_replies(ops: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Pairs (A, B): A's reply showed revision r, B started after A ended, B saw less."""
    by_end = sorted(ops, key=lambda o: o["t1"])
    ends = [o["t1"] for o in by_end]
    best: list[dict[str, Any]] = []
    for o in by_end:
        best.append(o if not best or o["rev"] >= best[-1]["rev"] else best[-1])
    bad = []
    for b in ops:
        i = bisect.bisect_left(ends, b["t0"])
        if i and best[i - 1]["rev"] > b["rev"]:
            bad.append((best[i - 1], b))
    return bad


def test_no_reply_shows_a_revision_a_later_request_cannot_see(make_daemon,
                                                              tmp_path: Path) -> None:
    d = make_daemon()
    d.start()
    with d.client() as c:
        fid = c.add_flow("register")
    stop = tmp_path / "stop"
    outs = [tmp_path / f"ops-{i}.jsonl" for i in range(WORKERS)]
    procs = [subprocess.Popen([sys.executable, __file__, str(d.data_dir), fid, str(out),
                               str(stop), str(i)]) for i, out in enumerate(outs)]
    try:
        for _ in range(KILLS):
            time.sleep(HISTORY_SECONDS / (KILLS + 1))  # load runs meanwhile: no event to await
            d.kill()
            d.start()
        time.sleep(HISTORY_SECONDS / (KILLS + 1))
    finally:
        stop.touch()
        for p in procs:
            p.wait(60)
    ops = [json.loads(line) for out in outs for line in out.read_text().splitlines()]
    assert not [o for o in ops if o["kind"] == "unexpected"], ops
    assert len(ops) > 200, f"too little history to check: {len(ops)} ops"
    assert any(o["kind"] == "conflict" for o in ops), "no compare-and-set ever conflicted"
    stale = stale_replies(ops)
    assert not stale, f"{len(stale)} stale replies, e.g. {stale[:3]}"
    writes = [o["rev"] for o in ops if o["kind"] in ("write", "cas")]
    assert len(writes) == len(set(writes)), "two acknowledged writes share a revision"
    for o in ops:
        if o["kind"] == "cas":
            assert o["rev"] == o["asked"] + 1, o
        elif o["kind"] == "conflict":
            assert o["rev"] != o["asked"], o
    with d.client() as c:
        assert c.get_flow_by_id(fid).revision >= max(writes)
    assert d.stop() == 0


if __name__ == "__main__":
    sys.exit(worker(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])))
