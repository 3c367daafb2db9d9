"""A big file parsed at start in a child process (flowd.load_child): the daemon gets what
parsing it in process would give it, and anything else means "parse it here"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import orjson
import pytest

from flowd import flow_lines, load_child
from flowd.digests import digest
from flowd.storage.loader import load_file
from flowd.storage.migrate import CorruptFileError
from flowd.stray_parse import FrameError

T0 = "2024-05-01T09:00:00"


def _flow(i: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"flow_{i:08x}", "name": f"이름 {i}", "plans": [{"t": i, "done": i % 2 == 0}],
            "created": T0, "updated": T0, **extra}


DOCS = {
    # a legacy file: no version, flows as a list (migrated, with notes)
    "legacy": {"flows": [_flow(1), _flow(2, color="red")], "current_flow_id": "flow_00000002"},
    # a clean 3.0 document with unknown keys at every level, as an old tool keeps them
    "3.0": {"version": "3.0", "meta": {"file_revision": 4, "revision": 7, "mine": [1, 2.5]},
            "current_flow_id": "flow_00000003", "tool": {"x": None},
            "flows": {f["id"]: f for f in (_flow(3, revision=5), _flow(4, extra={"a": 1}))}},
}


@pytest.fixture
def in_child(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load_child, "CHILD_LOAD_BYTES", 0)


@pytest.mark.parametrize("kind", sorted(DOCS))
def test_the_child_loads_what_the_daemon_would(kind: str, tmp_path: Path, in_child: None) -> None:
    path = tmp_path / "flows.json"
    path.write_bytes(orjson.dumps(DOCS[kind]))
    got = load_child.load_in_child(path, tmp_path)
    here = load_file(path)
    assert got is not None
    assert (got.migrated, got.source_version, got.notes, got.size) == (
        here.migrated, here.source_version, here.notes, here.size)
    flows = here.doc.pop("flows")
    lines = got.doc.pop("flows").lines
    assert got.doc == here.doc
    assert lines == {fid: flow_lines.encode(fid, f) for fid, f in flows.items()}
    assert list(lines) == list(flows)
    assert got.digests == {fid: digest(f) for fid, f in flows.items()}


def test_a_small_file_stays_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "flows.json"
    path.write_bytes(orjson.dumps(DOCS["3.0"]))
    monkeypatch.setattr(load_child, "CHILD_LOAD_BYTES", path.stat().st_size + 1)
    assert load_child.load_in_child(path, tmp_path) is None


def test_a_corrupt_file_is_refused_as_the_loader_refuses_it(tmp_path: Path,
                                                           in_child: None) -> None:
    path = tmp_path / "flows.json"
    path.write_bytes(b'{"version": "3.0", "flows": {"a": ')
    with pytest.raises(CorruptFileError):
        load_child.load_in_child(path, tmp_path)


def test_a_failing_child_leaves_it_to_the_daemon(tmp_path: Path, in_child: None,
                                                monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    path, gate = tmp_path / "flows.json", tmp_path / "gate"
    path.write_bytes(orjson.dumps(DOCS["3.0"]))
    gate.write_bytes(b"fail")  # what the child reads first (a FIFO in other tests)
    monkeypatch.setenv(load_child.GATE_ENV, str(gate))
    assert load_child.load_in_child(path, tmp_path) is None
    assert "parsing it in the daemon" in caplog.text


_HEAD = {"v": 1, "count": 1, "doc": {"meta": {}}, "load": {"migrated": False, "source": "3.0",
                                                             "notes": [], "size": 10}}
_FRAME = [["flow_a"], [b'    "flow_a": {}'], [1]]


@pytest.mark.parametrize("frames", [
    [], [[1]], [{**_HEAD, "v": 2}], [{**_HEAD, "doc": {}}], [{**_HEAD, "count": "1"}],
    [{**_HEAD, "load": {**_HEAD["load"], "notes": [1]}}], [_HEAD],  # no flow of the one
    [_HEAD, _FRAME, _FRAME], [_HEAD, [["flow_a"], [b"x"]]], [_HEAD, [["flow_a"], ["x"], [1]]],
    [_HEAD, [["flow_a"], [b"x"], ["not a digest"]]], [_HEAD, [["flow_a", "b"], [b"x"], [1]]],
])
def test_output_that_does_not_check_out_is_refused(frames: list[Any]) -> None:
    packed = [msgpack.unpackb(msgpack.packb(f)) for f in frames]
    with pytest.raises((FrameError, ValueError, StopIteration)):
        load_child.read_loaded(iter(packed))


def test_output_that_checks_out_is_taken() -> None:
    got = load_child.read_loaded(iter([_HEAD, _FRAME]))
    assert got.doc["flows"].lines == {"flow_a": b'    "flow_a": {}'} and got.digests == {
        "flow_a": 1}
