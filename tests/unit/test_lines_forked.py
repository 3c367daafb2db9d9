"""flowd's own flows.json checked by a forked child while the daemon splits it: the
same table, refused alike or left to the full parser alike, as when one process
does both; and whatever the child cannot say (it died, other ids) done again in
process, never kept unchecked.

Every test here forks for real (``FORK_FROM`` lowered to 0): the child checks
the very bytes the parent split, with the parent's hash secret.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_lines_file import _FILES, NAMES, _outcome, _pieces, flow, rechecked, written

from flowd.storage import lines_file, lines_split
from flowd.storage.migrate import CorruptFileError


class Reread:
    """The loader's ``reread``: the file's pieces again, counted."""

    def __init__(self, data: bytes, cuts: list[int] | None = None) -> None:
        self.data, self.cuts, self.calls = data, cuts or [], 0

    def __call__(self) -> list[bytes]:
        self.calls += 1
        return _pieces(self.data, self.cuts)


def forked_outcome(data: bytes, ids: list[str], cuts: list[int] | None = None) -> Any:
    """What read_own makes of a file with the check in a child (the loader's call)."""
    reread = Reread(data, cuts)
    try:
        doc = lines_file.read_own(_pieces(data, cuts or []), ids, reread)
    except CorruptFileError as exc:
        return ("refused", str(exc)), reread.calls
    if doc is None:
        return None, reread.calls
    table = doc.pop("flows")
    return (doc, list(table.lines.items()), list(table.name_keys or [])), reread.calls


def recomputed(data: bytes) -> bytes:
    """The file with its check recomputed where it still has one and a body."""
    try:
        return rechecked(data)
    except ValueError:
        return data


def file_ids(data: bytes) -> list[str]:
    got = _outcome(data, [])
    return [fid for fid, _ in got[1]] if got and got[0] != "refused" else []


@pytest.fixture(autouse=True)
def fork_always(monkeypatch) -> None:
    monkeypatch.setattr(lines_split, "FORK_FROM", 0)


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(sorted(_FILES)), cuts=st.lists(st.integers(0, 10**6), max_size=8),
       damage=st.one_of(st.none(), st.tuples(st.integers(0, 10**6), st.integers(0, 255))),
       region=st.sampled_from([64, 300, 4 << 20]), recheck=st.booleans())
def test_a_file_checked_beside_reads_as_checked_in_process(
        name: str, cuts: list[int], damage: tuple[int, int] | None, region: int,
        recheck: bool) -> None:
    """Damaged anywhere (with its check recomputed or not), cut in pieces anywhere: the
    child's check and this process's split give exactly the in-process outcome, and
    the file is read once (its ids are those expected)."""
    data = bytearray(_FILES[name])
    if damage is not None:
        data[damage[0] % len(data)] = damage[1]
    whole = recomputed(bytes(data)) if recheck else bytes(data)
    ids = file_ids(_FILES[name])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lines_split, "REGION", region)
        want = _outcome(whole, ids)
        got, rereads = forked_outcome(whole, ids, cuts)
    assert got == want
    if want is None or (want[0] != "refused" and file_ids(whole) == ids):
        assert rereads == 0  # decided by the child's verdicts alone


def _body_of(data: bytes) -> bytes:
    start = data.index(b'"flows": {') + len(b'"flows": {')
    return data[start:data.rindex(b"\n  }")]


def _exact(got: Any, data: bytes) -> bool:
    """A table kept is the body's bytes, every one in one line only, each line opening
    with its own id."""
    if got is None or got[0] == "refused":
        return True
    lines = got[1]
    return (b"\n" + b",\n".join(line for _, line in lines) == _body_of(data)
            and all(line.startswith(b"    %s: {" % json.dumps(fid, ensure_ascii=False)
                                    .encode()) for fid, line in lines))


@settings(max_examples=150, deadline=None)
@given(at=st.integers(0, 10**6), byte=st.sampled_from(b'\n,{}":\\ x0'),
       insert=st.booleans())
def test_a_table_read_by_its_lines_is_the_body_line_by_line(at: int, byte: int,
                                                            insert: bool) -> None:
    """With its check recomputed (only the layout check stands guard), a file changed
    by one byte that shapes the layout anywhere in its body is decided alike here and
    beside, and a table kept is exactly the body's bytes. (Whether a line holds one
    JSON member and not two is the CRC's to catch: without parsing, no check can tell
    a member's end from a nested object's, so a check recomputed by whoever can write
    the data dir can hide a flow inside another's line, as before this check.)"""
    base = _FILES["odd names and extras"]
    body = base.index(b'"flows": {') + len(b'"flows": {')
    cut = body + at % (base.rindex(b"\n  }") - body + 1)  # in the body or its edges
    data = recomputed(base[:cut] + bytes([byte]) + base[cut + (not insert):])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lines_split, "REGION", 300)
        here = _outcome(data, file_ids(base))
        beside, _ = forked_outcome(data, file_ids(base))
    assert beside == here
    assert _exact(here, data)


def test_a_line_out_of_layout_is_never_kept_checked_here_or_beside(monkeypatch) -> None:
    """Every byte of one line's head and tail, and of the separators around it, changed
    (or a byte put before it) to each byte that shapes the layout, with the check
    recomputed: the child and this process decide alike, and a table kept is exactly
    the body's bytes, line by line: no byte skipped, none added."""
    monkeypatch.setattr(lines_split, "REGION", 300)
    base = _FILES["plain"]
    ids = file_ids(base)
    line = base.index(b'\n    "flow_05"')
    end = base.index(b"\n", line + 1)
    spots = [*range(line - 2, line + 40), *range(end - 4, end + 2)]
    wrong = []
    for at in spots:
        for byte in b'\n,}" x':
            for insert in (False, True):
                data = recomputed(base[:at] + bytes([byte]) + base[at + (not insert):])
                here = _outcome(data, ids)
                beside, _ = forked_outcome(data, ids, [at])
                if beside != here or not _exact(here, data):
                    wrong.append((at - line, chr(byte), insert, here is None))
    assert wrong == []


@pytest.mark.parametrize("hint", ["shorter", "longer", "other", "reordered", "joined"])
def test_ids_other_than_expected_are_split_again_by_their_own(monkeypatch, caplog,
                                                               hint: str) -> None:
    """The memory of written files is wrong about the ids: the parent keyed its split by
    them, so it is thrown away and the file split again in process, keyed by its own."""
    monkeypatch.setattr(lines_split, "REGION", 300)
    data = _FILES["plain"]
    mine = file_ids(data)
    ids = {"shorter": mine[:7], "longer": [*mine, "flow_x"],
           "other": ["flow_zz", *mine[1:]], "reordered": mine[::-1],
           "joined": [*mine[:-2], "\n".join(mine[-2:])]}[hint]
    with caplog.at_level(logging.INFO, logger="flowd"):
        got, rereads = forked_outcome(data, ids, [100, 1000])
    assert got == _outcome(data, ids) and got is not None
    assert [fid for fid, _ in got[1]] == mine
    if hint == "longer":  # each line under the id expected: nothing to do again
        assert rereads == 0
    else:
        assert rereads == 1 and "other ids" in caplog.text


@pytest.mark.parametrize("how", ["exits", "raises", "is killed"])
def test_a_child_that_does_not_finish_leaves_the_check_to_this_process(
        monkeypatch, caplog, how: str) -> None:
    """Nothing the parent split is kept on a verdict it did not get."""
    def broken(regions: Any) -> Any:
        yield from []
        if how == "exits":
            os._exit(0)  # before its last record
        if how == "raises":
            raise MemoryError
        os.kill(os.getpid(), 9)

    monkeypatch.setattr(lines_split, "_verdicts", broken)
    data = _FILES["odd names and extras"]
    ids = file_ids(data)
    with caplog.at_level(logging.WARNING, logger="flowd"):
        got, rereads = forked_outcome(data, ids, [500])
    assert got == _outcome(data, ids) and got is not None and got[0] != "refused"
    assert rereads == 1 and "did not finish" in caplog.text


def test_without_ids_or_reread_nothing_is_forked(monkeypatch) -> None:
    """No ids expected (the memory of written files has none), or no way to read the
    file again: the split stays in process, as before."""
    def no_fork(*_: Any) -> Any:
        raise AssertionError("forked")

    monkeypatch.setattr(lines_split, "ForkedRecords", no_fork)
    data = _FILES["plain"]
    assert lines_file.read_own(data, [], Reread(data)) is not None
    assert lines_file.read_own(data, file_ids(data)) is not None


def test_a_repeated_id_goes_to_the_full_parser() -> None:
    flows = {"flow_a": flow("flow_a", "a"), "flow_b": flow("flow_b", NAMES[1])}
    dup = rechecked(written(flows).replace(b'    "flow_b": {"id":"flow_b"',
                                           b'    "flow_a": {"id":"flow_b"'))
    got, rereads = forked_outcome(dup, ["flow_a", "flow_a"])
    assert got is None and rereads == 0


@pytest.mark.parametrize("short", ["fork", "memfd_create", "no memfd_create"])
def test_no_process_or_descriptor_to_spare_leaves_the_check_here(monkeypatch, caplog,
                                                                  short: str) -> None:
    """fork() or memfd_create() failing (EAGAIN under a task limit, EMFILE, a sandbox
    that refuses the call) must not fail the start: the daemon checks the lines
    itself, and nothing is left open."""
    def refuse(*_: Any) -> Any:
        raise OSError(11, "Resource temporarily unavailable")

    before = set(os.listdir("/proc/self/fd"))
    if short == "no memfd_create":  # a libc without it
        monkeypatch.delattr(os, "memfd_create")
    else:
        monkeypatch.setattr(os, short, refuse)
    data = _FILES["odd names and extras"]
    ids = file_ids(data)
    with caplog.at_level(logging.WARNING, logger="flowd"):
        got, rereads = forked_outcome(data, ids, [700])
    assert got == _outcome(data, ids) and got is not None and rereads == 0
    assert "could not fork" in caplog.text
    assert set(os.listdir("/proc/self/fd")) == before


class LoadedLate:
    """The daemon's ids: the memory of written files loaded when first asked for. Says
    whether the checking child was already at work by then."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, give: Any) -> None:
        self.give, self.calls, self.child_at_work = give, 0, []
        self.children: list[Any] = []
        real = lines_split.ForkedRecords

        def fork(produce: Any) -> Any:
            child = real(produce)
            self.children.append((child, child.pid))
            return child
        monkeypatch.setattr(lines_split, "ForkedRecords", fork)

    def __call__(self) -> list[str]:
        self.calls += 1
        self.child_at_work.append(bool(self.children) and self.children[-1][0].pid > 0)
        if isinstance(self.give, BaseException):
            raise self.give
        return list(self.give)

    def reaped(self) -> bool:
        for child, pid in self.children:
            with pytest.raises(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            assert child.pid == 0 and child.fd == -1
        return bool(self.children)


def test_ids_asked_for_late_are_asked_once_the_child_checks(monkeypatch) -> None:
    """The memory of written files loads while the child checks (the daemon's start):
    the same outcome as ids known up front, the file read once."""
    data = _FILES["odd names and extras"]
    ids = file_ids(data)
    late = LoadedLate(monkeypatch, ids)
    got, rereads = forked_outcome(data, late, [500])  # type: ignore[arg-type]
    assert got == _outcome(data, ids) and got is not None and rereads == 0
    assert late.calls == 1 and late.child_at_work == [True]
    assert late.reaped()


def test_no_ids_after_all_stops_the_child_and_splits_here(monkeypatch) -> None:
    """The memory had no file to give ids for: nothing to key the parent's split by,
    so the child is stopped and reaped and the lines are checked and split here."""
    data = _FILES["odd names and extras"]
    late = LoadedLate(monkeypatch, [])
    got, rereads = forked_outcome(data, late, [500])  # type: ignore[arg-type]
    assert got == _outcome(data, []) and got is not None and rereads == 0
    assert late.child_at_work == [True] and late.reaped()


def test_ids_that_fail_to_load_leave_no_child_behind(monkeypatch) -> None:
    """The memory's load fails (its file unreadable): that error, as it is (not taken
    for flows.json's corruption), and no child or descriptor left."""
    before = set(os.listdir("/proc/self/fd"))
    late = LoadedLate(monkeypatch, PermissionError(13, "the sidecar is not readable"))
    data = _FILES["plain"]
    with pytest.raises(PermissionError, match="sidecar"):
        lines_file.read_own(_pieces(data, [300]), late, Reread(data))
    assert late.reaped()
    assert set(os.listdir("/proc/self/fd")) == before
