"""A tool's file read in a frame a turn while the store changes (flowd.stray_intake):
what it hands the merge must be exactly what one pass at the end would find.

The store is written between any two steps, as requests are served between the
loop's turns. A flow compared early and changed afterwards must be compared
again; a flow that was not changed must not be: the merge takes a cleared flow
as the tool's untouched copy, and the tool's edit of it would be lost.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_store import write

from flowd import flow_lines, stray_intake, stray_parse
from flowd.bases import FileMemory
from flowd.digests import digest
from flowd.store import Store
from flowd.stray_intake import Intake
from flowd.stray_parse import FrameError

IDS = [f"flow_{i:08x}" for i in range(8)]


class FakeParse:
    """The child's output, already written (what ToolFileParse.frames reads)."""

    exited = True

    def __init__(self, data: bytes) -> None:
        self.data = data

    def frames(self) -> Any:
        return iter(msgpack.Unpacker(io.BytesIO(self.data), raw=False))


def store_of(names: list[str]) -> Store:
    store = Store()
    for name in names:
        write(store, "add_flow", name=name, plans=[{"n": name}])
    store.changes = []  # the snapshot's replica logs from here (flowd.snapshotter.prime)
    return store


def child_output(theirs: dict[str, dict], **header: Any) -> bytes:
    out = io.BytesIO()
    stray_parse.write_lines(out, {"flows": {k: dict(v) for k, v in theirs.items()}, **header})
    return out.getvalue()


def memory_of(store: Store, own_rev: int, tmp: Path) -> FileMemory:
    """A memory whose newest file is the store as it is (one flow with extras), with
    one id the store never had, and at ``own_rev``."""
    m = FileMemory(tmp)
    m.own = {fid: digest(store.flows[fid]) for fid in store.flows}
    m.own[next(iter(m.own))] = (1, 2)
    m.own["flow_gone"] = 3
    m.own_rev = own_rev
    return m


def tool_copy(store: Store, how: list[str]) -> dict[str, dict]:
    """The tool's flows: each of ours kept, edited or dropped, plus a new one."""
    theirs = {}
    for fid, kind in zip(list(store.flows), how, strict=False):
        flow = store.flows[fid]
        if kind == "edit":
            flow["name"] += " (tool)"
        if kind != "drop":
            theirs[fid] = flow
    theirs["flow_new"] = {"id": "flow_new", "name": "new", "plans": [], "created": "c",
                          "updated": "u"}
    return theirs


def stray_line(fid: str, flow: dict) -> bytes:
    return flow_lines.encode(fid, {k: v for k, v in flow.items() if k != "revision"})


def one_pass(store: Store, theirs: dict[str, dict]) -> list[str]:
    heads = {fid: stray_line(fid, f) for fid, f in theirs.items()}
    return flow_lines.unheld_lines(store.flows.lines, heads)


WRITES = st.lists(st.tuples(st.sampled_from(["rename", "delete", "add", "restore"]),
                            st.integers(0, 7)), max_size=3)


@settings(max_examples=150, deadline=None)
@given(how=st.lists(st.sampled_from(["keep", "edit", "drop"]), min_size=6, max_size=6),
       between=st.lists(WRITES, min_size=1, max_size=30),
       own_at=st.integers(0, 6))
def test_intake_between_writes_finds_what_one_pass_at_the_end_finds(
        how: list[str], between: list[list[tuple[str, int]]], own_at: int) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stray_parse, "FRAME_BYTES", 150)  # a few flows a frame
        mp.setattr(stray_intake, "SLICE", 2)
        _check_interleaved(how, between, own_at)


def _check_interleaved(how: list[str], between: list[list[tuple[str, int]]],
                       own_at: int) -> None:
    store = store_of([f"f{i}" for i in range(6)])
    theirs = tool_copy(store, how)
    with tempfile.TemporaryDirectory() as tmp:
        memory = memory_of(store, own_at, Path(tmp))
    intake = Intake(store, FakeParse(child_output(theirs)), memory)  # type: ignore[arg-type]
    originals = {fid: store.flows[fid] for fid in store.flows}
    done, turns = False, iter(between)
    for _ in range(100):  # every turn: the writes served, then one step
        for op, i in next(turns, []):
            _apply(store, op, i, originals)
        if done:
            break
        done = intake.step()
    assert done
    taken = intake.finish()
    assert taken.theirs.lines == {fid: stray_line(fid, f) for fid, f in theirs.items()}
    assert taken.candidates == one_pass(store, theirs)
    assert taken.missing == [fid for fid in store.flows if fid not in theirs]
    found = taken.found
    assert found is not None
    assert set(flow_lines.changed_after(store.flows.lines, own_at)) <= set(found.changed)
    assert list(found.gone) == [fid for fid in memory.own if fid not in theirs]
    assert list(found.extras) == [next(iter(memory.own))]


def _apply(store: Store, op: str, i: int, originals: dict[str, dict]) -> None:
    ids = list(store.flows)
    if op == "add":
        write(store, "add_flow", name=f"added{i}")
    elif not ids:
        return
    elif op == "rename":
        write(store, "update_flow", flow_id=ids[i % len(ids)], name=f"renamed{i}")
    elif op == "delete":
        write(store, "delete_flow", flow_id=ids[i % len(ids)])
    else:  # back to the tool's copy's content: an edit that makes the line match again
        fid = ids[i % len(ids)]
        if fid in originals:
            write(store, "update_flow", flow_id=fid, name=originals[fid]["name"])


def test_a_reset_log_means_one_pass_at_the_end(tmp_path: Path) -> None:
    store = store_of(["a", "b"])
    theirs = tool_copy(store, ["keep", "keep"])
    intake = Intake(store, FakeParse(child_output(theirs)),  # type: ignore[arg-type]
                    memory_of(store, 0, tmp_path))
    while not intake.step():
        pass
    fid = next(iter(store.flows))
    write(store, "update_flow", flow_id=fid, name="changed")
    store.changes = []  # a snapshot took the log: the intake cannot tell what changed
    taken = intake.finish()
    assert taken.candidates == one_pass(store, theirs) and fid in taken.candidates
    assert taken.missing is None and taken.found is None  # the merge finds them itself


@pytest.mark.parametrize("frames, why", [
    ([{"v": 2}], "no header"),
    ([{"v": 1, "count": "1"}], "bad header"),
    ([{"v": 1, "count": 2, "current_flow_id": None, "file_revision": None},
      [["a"], [b"x"]]], "1 flows of 2"),
    ([{"v": 1, "count": 2, "current_flow_id": None, "file_revision": None},
      [["a"], [b"x"]], [["a"], [b"y"]]], "an id twice"),
    ([{"v": 1, "count": 1, "current_flow_id": None, "file_revision": None},
      [["a"], ["not bytes"]]], "bad frame"),
])
def test_output_not_as_the_child_writes_it_is_refused(frames: list[Any], why: str,
                                                     tmp_path: Path) -> None:
    data = b"".join(msgpack.packb(f) for f in frames)
    store = store_of(["a"])
    intake = Intake(store, FakeParse(data), memory_of(store, 0, tmp_path))  # type: ignore[arg-type]
    with pytest.raises(FrameError, match=why):
        for _ in range(10):
            intake.step()


def test_changed_ids_the_snapshotter_knows_are_not_read_off_the_lines(tmp_path: Path) -> None:
    store = store_of(["a", "b"])
    theirs = tool_copy(store, ["keep", "keep"])
    known = {"flow_x"}
    intake = Intake(store, FakeParse(child_output(theirs)),  # type: ignore[arg-type]
                    memory_of(store, -1, tmp_path), lambda: set(known))
    while not intake.step():
        pass
    assert intake.changed == []  # own_rev -1: every line would have been read
    known.add("flow_y")  # what the snapshotter knows at the end is what counts
    found = intake.finish().found
    assert found is not None and found.changed == {"flow_x", "flow_y"}
