"""Snapshot encoding and installation: what other programs read in flows.json.

The encoder joins the store's lines: parsed, the file is exactly the store's
document (flows in creation order, unknown keys kept, Korean unescaped), one
flow per line, at every chunk boundary. Installing keeps the previous
generation, links the written file, and never overwrites a file a stray
writer put there, even one that replaced flows.json while flowd waited for
the lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from flowd import flow_lines
from flowd.storage import lines_file
from flowd.storage import snapshot as smod
from flowd.storage.snapshot import (
    PREVIOUS,
    WRITTEN,
    SnapshotFiles,
    StrayWriterDetected,
    View,
    encode,
)


def flows(n: int) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for i in range(n):
        fid = f"flow_{i:08x}"
        out.append((fid, {"id": fid, "name": f"프로젝트 {i}", "plans": [{"t": "계획", "i": i}]
                          if i % 3 else [], "created": "2024-05-01T09:00:00",
                          "updated": "2024-05-10T12:34:56", "revision": i + 1}))
    return out


def lines_of(items: list[tuple[str, dict[str, Any]]]) -> dict[str, bytes]:
    return {fid: flow_lines.encode(fid, f) for fid, f in items}


def view(n: int, **kw: Any) -> View:
    items = flows(n)
    return View(lines_of(items), items[-1][0] if items else None, n + 5, 3, **kw)


def written(v: View) -> bytes:
    """The file's bytes as the snapshot writer leaves them (its check patched in)."""
    return encode(v).whole()


def expected_doc(v: View, got_meta: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {"version": "3.0",
                           "meta": {flow_lines.CHECK_KEY: got_meta[flow_lines.CHECK_KEY],
                                    "last_saved": got_meta["last_saved"],
                                    "file_revision": v.file_revision,
                                    "revision": v.revision, **v.meta_extra},
                           "current_flow_id": v.current_flow_id,
                           "flows": {fid: flow_lines.decode(fid, line)
                                     for fid, line in v.lines.items()}}
    doc.update(v.extra)
    return doc


@pytest.mark.parametrize("n", [0, 1, 8191, 8192, 8193, 20000])
def test_encode_is_the_document_one_flow_per_line(n: int) -> None:
    v = view(n)
    data = written(v)
    got = json.loads(data.decode("utf-8"))
    assert got == expected_doc(v, got["meta"])
    assert list(got["flows"]) == list(v.lines)  # creation order
    text = data.split(b"\n")
    for fid, flow in flows(n)[:: max(1, n // 50)]:
        line = b'    "%s": %s' % (fid.encode(), orjson.dumps(flow))
        assert line in text or line + b"," in text
    doc = lines_file.read_own(data)  # and it reads back by its lines, unparsed
    assert doc is not None and doc["flows"].lines == v.lines


@pytest.mark.parametrize("n", [0, 1, 8193])
def test_unknown_keys_written_back(n: int) -> None:
    v = view(n, meta_extra={"tool": {"x": [1, 2]}, "note": "메모"},
             extra={"settings": {"theme": "dark"}, "zz": None, "한글": ["값"]})
    data = written(v)
    got = json.loads(data)
    assert got == expected_doc(v, got["meta"])
    assert got["meta"]["tool"] == {"x": [1, 2]} and got["한글"] == ["값"]
    doc = lines_file.read_own(data)
    assert doc is not None and doc["한글"] == ["값"] and doc["meta"]["note"] == "메모"


def test_korean_is_not_escaped() -> None:
    data = written(view(3))
    assert "프로젝트 1".encode() in data and b"\\u" not in data


# ------------------------------------------------------------------ installing


def read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def test_install_keeps_previous_generation_and_written_link(tmp_path: Path) -> None:
    files = SnapshotFiles(tmp_path)
    files.write(view(2))
    assert read(tmp_path / "flows.json")["meta"]["revision"] == 7
    assert os.path.samefile(tmp_path / "flows.json", tmp_path / WRITTEN)
    files.write(View(lines_of(flows(4)), None, 20, 4))
    assert read(tmp_path / "flows.json")["meta"]["revision"] == 20
    assert read(tmp_path / PREVIOUS)["meta"]["revision"] == 7
    assert os.path.samefile(tmp_path / "flows.json", tmp_path / WRITTEN)
    assert files.known == smod.fingerprint(os.stat(tmp_path / "flows.json"))
    leftovers = [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]
    assert leftovers == []


def stray_rewrite(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name("flows.json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def test_stray_file_is_never_overwritten(tmp_path: Path) -> None:
    files = SnapshotFiles(tmp_path)
    files.write(view(2))
    stray_rewrite(tmp_path / "flows.json", {"version": "3.0", "flows": {}, "stray": True})
    before = (tmp_path / "flows.json").read_bytes()
    assert files.changed_behind_our_back()
    with pytest.raises(StrayWriterDetected):
        files.write(view(3))
    assert (tmp_path / "flows.json").read_bytes() == before
    assert not (tmp_path / PREVIOUS).exists()  # the stray file was not rotated away either
    assert not files.tmp.exists()


def test_stray_replace_while_flowd_waits_for_the_lock(tmp_path: Path) -> None:
    """The old tool flocks flows.json, then moves its temp file over it, then unlocks:
    flowd, waiting on the lock of the old inode, must notice the new file."""
    files = SnapshotFiles(tmp_path)
    files.write(view(2))
    path = tmp_path / "flows.json"
    holder = open(path, "a+")  # noqa: SIM115 - the old tool's lock handle
    fcntl.flock(holder, fcntl.LOCK_EX)
    result: list[BaseException | None] = []

    def snapshot() -> None:
        try:
            files.write(view(3))
            result.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported below
            result.append(exc)

    t = threading.Thread(target=snapshot)
    t.start()
    deadline = time.monotonic() + 10  # flowd has opened the old inode (and waits for its lock)
    while open_count(path) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert open_count(path) == 2, "the snapshot never opened flows.json"
    stray_rewrite(path, {"version": "3.0", "flows": {}, "stray": True})
    stray_bytes = path.read_bytes()
    fcntl.flock(holder, fcntl.LOCK_UN)
    holder.close()
    t.join(10)
    assert len(result) == 1 and isinstance(result[0], StrayWriterDetected), result
    assert path.read_bytes() == stray_bytes


def open_count(path: Path) -> int:
    """File descriptors of this process open on ``path``."""
    fds = Path("/proc/self/fd")
    n = 0
    for fd in fds.iterdir():
        try:
            n += os.readlink(fd) == str(path)
        except OSError:
            pass
    return n


def test_lock_timeout_is_an_oserror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = SnapshotFiles(tmp_path)
    files.write(view(1))
    before = (tmp_path / "flows.json").read_bytes()
    holder = open(tmp_path / "flows.json", "a+")  # noqa: SIM115
    fcntl.flock(holder, fcntl.LOCK_EX)
    real_lock = SnapshotFiles._lock
    monkeypatch.setattr(SnapshotFiles, "_lock", staticmethod(lambda fd: real_lock(fd, 0.2)))
    try:
        with pytest.raises(OSError):
            files.write(view(2))
    finally:
        holder.close()
    assert (tmp_path / "flows.json").read_bytes() == before
    assert not files.tmp.exists()


def test_missing_file_is_written_again(tmp_path: Path) -> None:
    files = SnapshotFiles(tmp_path)
    files.write(view(1))
    os.unlink(tmp_path / "flows.json")
    files.write(view(2))
    assert read(tmp_path / "flows.json")["meta"]["revision"] == 7
    assert os.path.samefile(tmp_path / "flows.json", tmp_path / WRITTEN)


def test_after_a_stray_file_prev_is_flowds_last_file(tmp_path: Path) -> None:
    files = SnapshotFiles(tmp_path)
    files.write(view(1))
    files.write(view(2))
    stray_rewrite(tmp_path / "flows.json", {"version": "3.0", "flows": {}, "stray": True})
    files.known = smod.fingerprint(os.stat(tmp_path / "flows.json"))  # merged: ours now
    files.rotate_from = WRITTEN
    inst = files.write(view(3))
    assert inst.rotated
    assert read(tmp_path / PREVIOUS)["meta"]["revision"] == 7  # view(2), not the tool's
    assert read(tmp_path / "flows.json")["meta"]["revision"] == 8
    assert files.rotate_from == smod.SNAPSHOT
    assert files.write(view(4)).rotated and read(tmp_path / PREVIOUS)["meta"]["revision"] == 8


def test_untrusted_file_is_not_rotated(tmp_path: Path) -> None:
    files = SnapshotFiles(tmp_path)
    files.write(view(1))
    files.write(view(2))
    files.rotate_from = None  # flows.json unreadable and nothing better
    assert not files.write(view(3)).rotated
    assert read(tmp_path / PREVIOUS)["meta"]["revision"] == 6
    os.unlink(tmp_path / "flows.json")
    assert not files.write(view(4)).rotated
