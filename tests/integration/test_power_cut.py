"""A power cut, not just a crash: acknowledged writes must be on the disk itself.

SIGKILL keeps the page cache, so a crash test passes even if flowd never
fsyncs. Here a real flowd runs under ``power_cut.py``, which records through
the ``fsio`` seam what each fsync/fdatasync covered; after SIGKILL the test
drops every byte no sync covered (as a power cut would), starts a plain flowd
on what is left, and looks for every acknowledged write. ``--durability none``
must fail that check (the test can fail for the property it names); ``strict``
must pass it. The same ledger counts the journal's fdatasyncs: one per group
commit, however many writers the group holds.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from conftest import Daemon
from flowd_client import FlowClient
from power_cut import cut_power, read_ledger

from flowd.storage.journal import is_segment_name

WRAPPER = Path(__file__).with_name("power_cut.py")
WRITERS = 4
#: acknowledged writes before the cut (the writers are still running then)
ACKED_BEFORE_CUT = 120


def start_recorded(make_daemon, tmp_path: Path, *args: str) -> tuple[Daemon, Path]:
    ledger = tmp_path / "ledger"
    d = make_daemon(tmp_path / "data", "--snapshot-interval", "3600", *args)
    d.command = [sys.executable, str(WRAPPER), str(ledger)]
    return d.start(), ledger


def write_until_killed(d: Daemon) -> tuple[set[str], list[threading.Thread]]:
    """WRITERS threads add flows; the daemon is SIGKILLed while they still run.
    Returns the ids it acknowledged, and the writers (they end at their next timeout)."""
    acked: set[str] = set()
    enough, stop = threading.Event(), threading.Event()
    lock = threading.Lock()

    def writer(tag: int) -> None:
        with FlowClient(d.data_dir, timeout=1.0, retries=0) as c:
            for i in range(10_000):
                if stop.is_set():  # no new write once the cut is near (one may be in flight)
                    return
                try:
                    fid = c.add_flow(f"w{tag}-{i}")
                except Exception:  # the daemon is gone (or slow, before the cut: go on)
                    if stop.is_set() or d.proc is None or d.proc.poll() is not None:
                        return
                    continue
                with lock:
                    acked.add(fid)
                    if len(acked) >= ACKED_BEFORE_CUT:
                        enough.set()

    threads = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(WRITERS)]
    for t in threads:
        t.start()
    assert enough.wait(60), "the writers did not get their writes acknowledged"
    stop.set()
    d.kill()
    with lock:  # a reply that arrived before the kill but is not counted yet: not checked
        return set(acked), threads


def survivors_of_power_cut(make_daemon, tmp_path: Path, durability: str) -> tuple[set, set]:
    d, ledger = start_recorded(make_daemon, tmp_path, "--durability", durability)
    acked, writers = write_until_killed(d)
    cut_power(d.data_dir, ledger)
    d.command = [sys.executable, "-m", "flowd"]
    d.start()  # meanwhile the writers time out on the dead daemon
    with d.client(timeout=10) as c:
        present = set(c.get_all_flows())
    d.stop()
    for t in writers:
        t.join(30)
    return acked, present


def test_every_acknowledged_write_survives_a_power_cut(make_daemon, tmp_path: Path) -> None:
    acked, present = survivors_of_power_cut(make_daemon, tmp_path, "strict")
    assert len(acked) >= ACKED_BEFORE_CUT
    assert acked - present == set()


def test_the_power_cut_check_fails_without_fsync(make_daemon, tmp_path: Path) -> None:
    """--durability none acknowledges before any fsync: the cut loses those writes,
    and the check above would fail (so it tests durability, not the page cache)."""
    acked, present = survivors_of_power_cut(make_daemon, tmp_path, "none")
    assert len(acked) >= ACKED_BEFORE_CUT
    assert acked - present, "nothing lost without fsync: the power cut did not cut"


def test_one_fdatasync_per_group_commit(make_daemon, tmp_path: Path) -> None:
    """8 concurrent writers: the journal's fdatasyncs are exactly the commits, and
    the commits are fewer than the records (groups formed)."""
    d, ledger = start_recorded(make_daemon, tmp_path)
    barrier = threading.Barrier(8)

    def writer(tag: int) -> None:
        with FlowClient(d.data_dir, timeout=20.0) as c:
            barrier.wait(10)
            for i in range(40):
                c.add_flow(f"w{tag}-{i}")

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    with d.client() as c:
        stats = c.stats()
    d.stop()
    syncs = [name for name, kind in read_ledger(ledger)[2]
             if kind == "fdatasync" and is_segment_name(name)]
    assert stats["committed_records"] == 320
    assert len(syncs) == stats["commits"]
    assert stats["commits"] < stats["committed_records"]



def test_the_cut_drops_unsynced_bytes_and_names(tmp_path: Path) -> None:
    """The model itself: bytes after a file's last sync go, and so does a rename
    that no fsync of its directory followed (the old file is back)."""
    data, ledger = tmp_path / "data", tmp_path / "ledger"
    data.mkdir()
    seg, snap, old = data / "journal-00000001.jnl", data / "flows.json", tmp_path / "old"
    seg.write_bytes(b"h" * 40 + b"r" * 60)
    snap.write_bytes(b"new")
    old.write_bytes(b"old")
    d_ino, s_ino = data.stat().st_ino, seg.stat().st_ino
    synced = [f"w {s_ino}", f"s {s_ino} 40 {seg.name} fdatasync",
              f"r {d_ino} .flows.json.tmp flows.json {old}"]
    ledger.write_text("\n".join(synced) + "\n")
    assert cut_power(data, ledger) == 60 + 1
    assert seg.read_bytes() == b"h" * 40
    assert snap.read_bytes() == b"old" and (data / ".flows.json.tmp").read_bytes() == b"new"
    (data / ".flows.json.tmp").rename(snap)  # the same rename, then the dir's fsync
    ledger.write_text("\n".join([*synced, f"s {d_ino} 0 data fsync"]) + "\n")
    assert cut_power(data, ledger) == 0 and snap.read_bytes() == b"new"
