"""A sick disk, in process: ENOSPC, EIO and EROFS injected at the IO seam.

The daemon's parts run without sockets (Daemon + RequestHandler.handle/commit). A
failing journal append must refuse the whole group with UNAVAILABLE and apply
nothing; a failing snapshot must leave flows.json as the last good file; when
the fault goes away the same runtime serves writes again, and a fresh runtime
on the same directory (after a clean close or a simulated crash) holds exactly
the acknowledged writes, never a refused one.
"""

from __future__ import annotations

import errno
import itertools
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flowd_client.protocol import build_request, unpack
from io_faults import fault

from flowd.config import Config
from flowd.daemon import Daemon

SYSCALLS = ("write", "fsync", "fdatasync", "replace", "link", "ftruncate")


class Harness:
    """One runtime, driven like the server loop drives it."""

    def __init__(self, data_dir: Path, **settings: Any) -> None:
        settings.setdefault("snapshot_interval", 3600.0)
        self.rt = Daemon(Config(data_dir=data_dir, **settings))
        self.rec = self.rt.open()
        self.ids = itertools.count(1)
        self.seqs = itertools.count(1)
        self.me = secrets.token_hex(4)  # retry keys must not repeat across runtimes

    def send(self, op: str, args: dict[str, Any], client: bytes = b"c1",
             key: tuple[str, int] | None = None, write: bool = True) -> int:
        """Hand one request to the service; returns its id (replies come with commit)."""
        rid = next(self.ids)
        if write and key is None:
            key = (f"{self.me}-{client.decode()}", next(self.seqs))
        out = self.rt.service.handle((client,), build_request(rid, op, args, key))
        self.early = out
        return rid

    def commit(self) -> dict[int, dict[str, Any]]:
        replies = {}
        for _, frame in self.early + self.rt.service.commit():
            msg = unpack(frame)
            replies[msg["id"]] = msg
        self.early = []
        return replies

    def call(self, op: str, args: dict[str, Any], **kw: Any) -> dict[str, Any]:
        rid = self.send(op, args, **kw)
        return self.commit()[rid]

    def add(self, name: str) -> str:
        reply = self.call("add_flow", {"name": name})
        assert "result" in reply, reply
        return reply["result"]

    def state(self) -> tuple[dict[str, Any], str | None, int]:
        s = self.rt.store
        return dict(s.flows), s.current_flow_id, s.revision

    def crash(self) -> None:
        """Die without closing: no final snapshot, no journal sync, just the lock."""
        self.rt.snap.wait()
        if self.rt.journal.fd is not None:
            os.close(self.rt.journal.fd)
            self.rt.journal.fd = None
        self.rt.lock.release()


def names(store_flows: dict[str, Any]) -> list[str]:
    return [f["name"] for f in store_flows.values()]


def unavailable(reply: dict[str, Any]) -> bool:
    return reply.get("error", {}).get("code") == "UNAVAILABLE"


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path / "data")
    yield harness
    if harness.rt.lock.file is not None:
        harness.rt.close()


# ------------------------------------------------------------------ journal appends


@pytest.mark.parametrize("call,err", [("write", errno.ENOSPC), ("write", errno.EROFS),
                                      ("fdatasync", errno.EIO), ("fdatasync", errno.ENOSPC)])
def test_failed_append_refuses_the_whole_group(tmp_path: Path, h: Harness, call: str,
                                               err: int) -> None:
    h.add("a")
    h.add("b")
    before = h.state()
    journal_before = h.rt.journal.total_bytes()
    with fault(call, err=err) as calls:
        r1 = h.send("add_flow", {"name": "refused-1"}, client=b"c1")
        r2 = h.send("update_flow", {"flow_id": before[1], "name": "refused-2"}, client=b"c2")
        r3 = h.send("add_flow", {"name": "refused-3"}, client=b"c3")
        replies = h.commit()
        assert calls[call] >= 1
    assert all(unavailable(replies[r]) for r in (r1, r2, r3)), replies
    assert h.state() == before  # nothing applied
    assert h.rt.service.collect_stats()["journal_failures"] == 1
    assert h.rt.journal.total_bytes() <= journal_before + 200  # at most a fresh header
    # the fault is gone: the same runtime writes again, no restart
    h.add("c")
    assert names(h.rt.store.flows) == ["a", "b", "c"]
    assert h.rt.close()
    again = Harness(tmp_path / "data")
    assert names(again.rt.store.flows) == ["a", "b", "c"]
    again.rt.close()


@pytest.mark.parametrize("truncate_fails", [False, True], ids=["truncated", "untruncatable"])
def test_refused_write_never_reappears_after_a_crash(tmp_path: Path, h: Harness,
                                                    truncate_fails: bool) -> None:
    a = h.add("a")
    with fault("fdatasync", *(["ftruncate"] if truncate_fails else []), err=errno.EIO):
        reply = h.call("add_flow", {"name": "refused"})
    assert unavailable(reply)
    h.crash()  # before any later write could void it
    again = Harness(tmp_path / "data")
    assert names(again.rt.store.flows) == ["a"] and again.rt.store.current_flow_id == a
    assert again.rt.store.revision == 1
    again.add("b")
    again.crash()
    third = Harness(tmp_path / "data")
    assert names(third.rt.store.flows) == ["a", "b"]
    third.rt.close()


def test_refused_write_is_voided_by_the_next_segment(tmp_path: Path, h: Harness) -> None:
    h.add("a")
    with fault("fdatasync", "ftruncate", err=errno.EIO):
        assert unavailable(h.call("add_flow", {"name": "refused"}))
    with fault("write", "fsync", err=errno.ENOSPC):  # and the voiding segment cannot open
        assert unavailable(h.call("add_flow", {"name": "refused-too"}))
    h.add("b")  # same revision as the refused ones: its new segment voids them
    h.add("c")
    h.crash()
    again = Harness(tmp_path / "data")
    assert names(again.rt.store.flows) == ["a", "b", "c"]
    assert again.rt.store.revision == 3
    again.rt.close()


def test_retry_of_a_refused_write_is_applied_once(tmp_path: Path, h: Harness) -> None:
    key = ("tool", 1)
    with fault("write"):
        assert unavailable(h.call("add_flow", {"name": "x"}, key=key))
    first = h.call("add_flow", {"name": "x"}, key=key)
    second = h.call("add_flow", {"name": "x"}, key=key)  # a retry after the success
    assert first["result"] == second["result"]
    assert names(h.rt.store.flows) == ["x"]
    h.crash()
    again = Harness(tmp_path / "data")
    third = again.call("add_flow", {"name": "x"}, key=key)  # retried across a restart
    assert third["result"] == first["result"]
    assert names(again.rt.store.flows) == ["x"]
    again.rt.close()


def test_retry_after_snapshots_and_restarts_is_applied_once(tmp_path: Path,
                                                            h: Harness) -> None:
    """The reply to a write was lost in a crash; the client retries it (same key) a
    second later, after another restart and snapshots made the record obsolete."""
    key = ("tool", 7)
    first = h.call("add_flow", {"name": "x"}, key=key)
    h.crash()
    second = Harness(tmp_path / "data")  # replays the record, then snapshots cover it
    second.add("y")
    for _ in range(3):
        assert second.rt.snap.write_now(second.rt.store).installed is not None
    second.crash()
    third = Harness(tmp_path / "data")
    assert third.rec.replayed == 0  # flows.json holds everything now
    retry = third.call("add_flow", {"name": "x"}, key=key)
    assert retry["result"] == first["result"]
    assert names(third.rt.store.flows) == ["x", "y"]
    third.rt.close()


def test_reads_keep_working_while_the_journal_fails(h: Harness) -> None:
    fid = h.add("a")
    with fault("write", "fdatasync", "fsync", err=errno.EIO):
        assert unavailable(h.call("delete_flow", {"flow_id": fid}))
        got = h.call("get_flow", {"flow_id": fid}, write=False)
        assert got["result"]["name"] == "a"
        stats = h.call("stats", {}, write=False)["result"]
        assert stats["journal_failures"] == 1
        assert "Input/output" in stats["last_journal_error"]


# ------------------------------------------------------------------ snapshots


def snapshot_files(data_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in data_dir.iterdir()
            if p.name.startswith(("flows.json", ".flows.json"))}


@pytest.mark.parametrize("calls,err", [(("write",), errno.ENOSPC), (("fsync",), errno.EIO),
                                       (("replace",), errno.EROFS), (("link",), errno.EROFS)])
def test_failed_snapshot_leaves_the_last_good_file(tmp_path: Path, h: Harness,
                                                   calls: tuple[str, ...], err: int) -> None:
    h.add("a")
    assert h.rt.snap.write_now(h.rt.store).installed is not None
    good = snapshot_files(h.rt.data_dir)
    h.add("b")
    with fault(*calls, err=err):
        out = h.rt.snap.write_now(h.rt.store)
    assert out.installed is None and out.error is not None
    assert snapshot_files(h.rt.data_dir) == good  # flows.json, .prev, .written untouched
    assert not [p for p in h.rt.data_dir.iterdir() if ".tmp" in p.name]
    assert h.rt.snap.stats.failures == 1
    h.add("c")  # writes go on: the journal holds them
    assert h.rt.snap.write_now(h.rt.store).installed is not None
    h.crash()
    again = Harness(tmp_path / "data")
    assert names(again.rt.store.flows) == ["a", "b", "c"]
    again.rt.close()


def test_background_snapshot_failure_is_retried_by_itself(tmp_path: Path) -> None:
    h = Harness(tmp_path / "data", snapshot_interval=0.01)
    rt = h.rt
    h.add("a")
    rt.maybe_snapshot(time.monotonic() + 1)
    rt.snap.wait()
    good = (rt.data_dir / "flows.json").read_bytes()
    h.add("b")
    save = h.send("save", {"force": True})
    with fault("write", err=errno.ENOSPC):
        rt.maybe_snapshot(time.monotonic() + 1)
        rt.snap._thread.join(10)  # noqa: SLF001 - wait for the background writer
        replies = h.commit()
        for _, frame in rt.collect_snapshot():
            msg = unpack(frame)
            replies[msg["id"]] = msg
    assert replies[save]["result"] is False  # save(force=True) says it did not save
    assert (rt.data_dir / "flows.json").read_bytes() == good
    assert rt.snap.stats.failures == 1 and rt.snap.stats.last_error
    rt.maybe_snapshot(time.monotonic())
    assert not rt.snap.busy  # backs off instead of hammering a full disk
    rt.maybe_snapshot(time.monotonic() + 5)
    rt.snap.wait()
    doc_rev = rt.snap.installed_rev
    assert doc_rev == rt.store.revision == 2
    assert b'"b"' in (rt.data_dir / "flows.json").read_bytes()
    assert rt.close()


def test_final_snapshot_failure_keeps_the_journal(tmp_path: Path, h: Harness) -> None:
    h.add("a")
    h.add("b")
    with fault("replace", err=errno.EROFS):
        assert h.rt.close() is False  # exit code 1: the journal still holds every change
    again = Harness(tmp_path / "data")
    assert names(again.rt.store.flows) == ["a", "b"]
    again.rt.close()


def test_journal_fault_during_snapshot_rotation_does_not_kill_the_loop(
        tmp_path: Path, h: Harness) -> None:
    """A snapshot start opens a new journal segment; a full disk must fail it softly."""
    h.add("a")
    with fault("write", err=errno.ENOSPC):
        out = h.rt.snap.write_now(h.rt.store)
        assert out.installed is None
        assert unavailable(h.call("add_flow", {"name": "refused"}))
    h.add("b")
    h.crash()
    again = Harness(tmp_path / "data")
    assert names(again.rt.store.flows) == ["a", "b"]
    again.rt.close()
