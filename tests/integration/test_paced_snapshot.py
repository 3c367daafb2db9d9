"""Background snapshots are held to --snapshot-rate, and nobody waits for that: a
forced save, or a shutdown, has the file written at full speed.

At a kilobyte a second the store below would take a quarter of an hour to
write; the tests catch the snapshot in its pacer's wait (its temp file holds
the first flushed piece) and must still get the file within their timeouts."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
from awaiting import wait_for

from flowd.storage.snapshot import PACED_FLUSH_EVERY

SLOW = ("--snapshot-rate", "1K")


def fill(c) -> list[str]:
    """~1.2 MB of flows: several paced pieces."""
    return [c.add_flow(f"f{i}", [{"n": i, "t": "x" * 4000}]) for i in range(300)]


def pacing(data_dir: Path) -> bool:
    """A snapshot is past its first flush: from there its pacer waits ~4 minutes."""
    for p in data_dir.iterdir():
        if p.name.startswith(".flows.json.tmp-"):
            try:
                if p.stat().st_size >= PACED_FLUSH_EVERY:
                    return True
            except FileNotFoundError:
                pass
    return False


def saved_ids(data_dir: Path) -> set[str]:
    return set(orjson.loads((data_dir / "flows.json").read_bytes())["flows"])


def test_a_forced_save_hurries_a_paced_snapshot(make_daemon, tmp_path: Path) -> None:
    d = make_daemon(tmp_path / "data", *SLOW).start()
    with d.client(timeout=30.0) as c:
        ids = fill(c)
        wait_for(lambda: pacing(d.data_dir), what="a paced snapshot in its wait")
        assert c.save(force=True) is True
        assert set(ids) <= saved_ids(d.data_dir)
    assert d.stop() == 0


def test_a_shutdown_hurries_a_paced_snapshot(make_daemon, tmp_path: Path) -> None:
    d = make_daemon(tmp_path / "data", *SLOW).start()
    with d.client() as c:
        ids = fill(c)
    wait_for(lambda: pacing(d.data_dir), what="a paced snapshot in its wait")
    assert d.stop(timeout=30.0) == 0
    assert set(ids) <= saved_ids(d.data_dir)


def test_a_journal_outgrowing_its_bound_hurries_a_paced_snapshot(make_daemon,
                                                                 tmp_path: Path) -> None:
    """Writes faster than the pacing: the journal passes --journal-max-bytes during the
    snapshot, which then finishes at full speed (the journal's segments before it can
    go only once it is installed). The store is filled by an earlier run, so that the
    journal starts empty and the first snapshot of this one is paced."""
    filler = make_daemon(tmp_path / "data").start()
    with filler.client() as c:
        fill(c)
    assert filler.stop() == 0
    d = make_daemon(tmp_path / "data", *SLOW, "--journal-max-bytes", "256K").start()
    with d.client(timeout=30.0) as c:
        c.add_flow("one more", [])
        wait_for(lambda: pacing(d.data_dir), what="a paced snapshot in its wait")
        before = c.stats()["snapshot"]["count"]
        for i in range(80):  # ~320 KB of records: past the bound
            c.add_flow(f"g{i}", [{"t": "y" * 4000}])
        wait_for(lambda: c.stats()["snapshot"]["count"] > before, timeout=30.0,
                 what="the paced snapshot, hurried, installed")
    assert d.stop() == 0


def test_a_snapshot_reports_the_cpu_its_thread_used(make_daemon, tmp_path: Path) -> None:
    """The CPU the next snapshot's wait is measured by: the snapshot thread's own, some
    of it, never more than the time it can have run (one thread). Not bounded by
    ``last_seconds``: that is the write alone, and the CPU also counts the catch-up and
    the memory of the file (more than the write in a store this small)."""
    d = make_daemon(tmp_path / "data").start()
    with d.client(timeout=30.0) as c:
        t0 = time.monotonic()
        fill(c)
        assert c.save(force=True) is True
        snap = c.stats()["snapshot"]
        span = time.monotonic() - t0
    assert 0 < snap["last_cpu_seconds"] <= span
    assert snap["cpu_seconds"] >= snap["last_cpu_seconds"]
    assert d.stop() == 0
