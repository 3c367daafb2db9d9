"""load_file(): bytes on disk to a normalized document, in memory or as a stream.

The stream path must give exactly what the in-memory path gives, and every
kind of broken file must come back as CorruptFileError (the caller keeps the
bytes aside), never as some other exception or a half-loaded store.
"""

from __future__ import annotations

import gc
import hashlib
import tracemalloc
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from flowd_client.flowids import candidate, content_bytes

from flowd.storage import loader, migrate
from flowd.storage.loader import LoadResult, load_file
from flowd.storage.migrate import CorruptFileError

T0 = "2024-05-01T09:00:00"
WHOLE = 1 << 40  # stream_threshold that never streams
STREAM = 0  # stream_threshold that streams every non-3.0 file
BOTH = pytest.mark.parametrize("threshold", [WHOLE, STREAM], ids=["whole", "stream"])


@pytest.fixture(autouse=True)
def determinize(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both paths must agree: give them the same clock (ids are derived from content)."""
    monkeypatch.setattr(migrate, "_now", lambda: "NOW")


def write(path: Path, doc: object, *, indent: bool = True) -> Path:
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 if indent else 0))
    return path


def legacy_doc() -> dict[str, Any]:
    """A legacy file that exercises most rules; small top-level values on both sides."""
    flows: list[Any] = [
        {"id": "a", "name": "프로젝트 A", "plans": [{"t": "x", "w": 1.25, "big": 10**15}],
         "created": T0, "updated": T0, "extra": {"k": [1, 2.5]}},
        {"name": "no id"},
        {"id": "a", "name": "dup", "plans": "not a list"},
        {"id": "a", "name": 7},
        17,
        {"id": "b", "revision": 3, "created": T0, "updated": None},
    ]
    return {"version": "2.0", "meta": {"file_revision": 4, "m": {"x": 0.5}},
            "current_flow": {"id": "b", "name": "x"}, "flows": flows,
            "after": {"nested": [1, {"f": 1.5e-3}]}, "z": None}


def load_both(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[LoadResult, LoadResult]:
    whole = load_file(path, stream_threshold=WHOLE)
    stream = load_file(path, stream_threshold=STREAM)
    return whole, stream


def assert_same(a: LoadResult, b: LoadResult) -> None:
    assert a.doc == b.doc
    assert list(a.doc) == list(b.doc)
    assert [list(f) for f in a.doc["flows"].values()] == [list(f) for f in b.doc["flows"].values()]
    assert a.notes == b.notes
    assert (a.migrated, a.source_version, a.size) == (b.migrated, b.source_version, b.size)


def native_only(value: object) -> bool:
    """Only the types orjson itself would produce (no Decimal from ijson)."""
    if isinstance(value, dict):
        return all(type(k) is str and native_only(v) for k, v in value.items())
    if isinstance(value, list):
        return all(native_only(v) for v in value)
    return value is None or type(value) in (str, int, float, bool)


# ------------------------------------------------------------ clean and legacy


def test_clean_3_0_file_is_not_migrated(tmp_path: Path) -> None:
    doc = {"version": "3.0", "meta": {"last_saved": T0, "file_revision": 2, "revision": 5},
           "current_flow_id": "a",
           "flows": {"a": {"id": "a", "name": "n", "plans": [], "created": T0, "updated": T0,
                           "revision": 5}}}
    path = write(tmp_path / "flows.json", doc)
    got = load_file(path)
    assert got.doc == doc and got.notes == []
    assert got.migrated is False and got.source_version == "3.0"
    assert got.size == path.stat().st_size and got.seconds >= 0


@BOTH
def test_legacy_file_is_migrated(tmp_path: Path, threshold: int) -> None:
    got = load_file(write(tmp_path / "f.json", legacy_doc()), stream_threshold=threshold)
    assert got.migrated is True and got.source_version == "2.0"
    no_id = candidate(hashlib.sha256(content_bytes(got.doc["flows"][list(got.doc["flows"])[1]])), 0)
    assert list(got.doc["flows"]) == ["a", no_id, "a_dup", "a_dup2", "b"]
    assert got.doc["current_flow_id"] == "b"
    assert got.doc["flows_invalid"] == {"#5": 17}
    assert got.doc["meta"] == {"file_revision": 4, "m": {"x": 0.5}, "revision": 3}
    assert got.notes[0].startswith("migrated from version '2.0'")


@BOTH
def test_numeric_or_missing_version_reported_as_string_or_none(tmp_path: Path,
                                                              threshold: int) -> None:
    path = write(tmp_path / "f.json", {"version": 2, "flows": []})
    assert load_file(path, stream_threshold=threshold).source_version == "2"
    path = write(tmp_path / "g.json", [{"id": "a"}])
    got = load_file(path, stream_threshold=threshold)
    assert got.source_version is None and list(got.doc["flows"]) == ["a"]


def test_3_0_file_with_repairs_is_marked_migrated(tmp_path: Path) -> None:
    doc = {"version": "3.0", "flows": {"a": {"id": "b", "name": "n", "plans": {}}}}
    got = load_file(write(tmp_path / "f.json", doc))
    assert got.migrated is True and got.source_version == "3.0" and got.notes
    assert got.doc["flows"]["a"]["plans_invalid"] == {}


@BOTH
def test_byte_order_mark_is_tolerated(tmp_path: Path, threshold: int) -> None:
    path = tmp_path / "f.json"
    path.write_bytes(b"\xef\xbb\xbf" + orjson.dumps({"flows": [{"id": "a"}]}))
    got = load_file(path, stream_threshold=threshold)
    assert list(got.doc["flows"]) == ["a"]
    assert any("byte order mark" in n for n in got.notes)


# ------------------------------------------------------------ corrupt files

CORRUPT = {
    "empty": b"",
    "whitespace": b"  \n\t ",
    "invalid json": b'{"flows": [}',
    "truncated": orjson.dumps({"flows": [{"id": "a", "name": "x" * 100}]})[:-20],
    "truncated after key": b'{"flows": [], "meta"',
    "invalid utf-8": b'{"flows": [{"id": "a", "name": "\xff\xfe"}]}',
    "garbage": bytes(range(256)) * 4,
    "nul bytes": b"\x00" * 64,
    "trailing data": b'{"flows": []} {"x": 1}',
    "top level number": b"42",
    "top level string": b'"flows"',
    "top level null": b"null",
    "flows a string": b'{"flows": "abc"}',
    "flows null": b'{"flows": null}',
    "3.0 flows a list": b'{"version": "3.0", "flows": [{"id": "a"}]}',
    "3.0 without flows": b'{"version": "3.0", "meta": {}}',
    "NaN": b'{"flows": [{"id": "a", "x": NaN}]}',
}


@BOTH
@pytest.mark.parametrize("content", CORRUPT.values(), ids=list(CORRUPT))
def test_corrupt_file_raises(tmp_path: Path, content: bytes, threshold: int) -> None:
    path = tmp_path / "flows.json"
    path.write_bytes(content)
    with pytest.raises(CorruptFileError) as info:
        load_file(path, stream_threshold=threshold)
    assert str(info.value)
    assert path.read_bytes() == content  # never touched


def test_duplicate_flows_key_in_stream_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_bytes(b'{"flows": [{"id": "a"}], "flows": []}')
    with pytest.raises(CorruptFileError, match="two 'flows'"):
        load_file(path, stream_threshold=STREAM)


def test_missing_file_is_not_corrupt(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_file(tmp_path / "nope.json")


@BOTH
@pytest.mark.parametrize("enabled", [True, False])
def test_gc_state_restored(tmp_path: Path, threshold: int, enabled: bool) -> None:
    good = write(tmp_path / "good.json", legacy_doc())
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"flows": [')
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        load_file(good, stream_threshold=threshold)
        assert gc.isenabled() is enabled
        with pytest.raises(CorruptFileError):
            load_file(bad, stream_threshold=threshold)
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


# ------------------------------------------------------------ stream == in memory


def test_stream_matches_memory_for_legacy_list(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    whole, stream = load_both(write(tmp_path / "f.json", legacy_doc()), monkeypatch)
    assert_same(whole, stream)
    assert native_only(stream.doc)


def test_stream_matches_memory_for_legacy_dict_form(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    doc = {"meta": [1], "flows": {"a": {"name": "x", "plans": [1.5]}, "": {"name": "e"},
                                  "c": {"id": "d", "plans": None}, "e": "junk"},
           "current_flow_id": "c", "u": 1}
    whole, stream = load_both(write(tmp_path / "f.json", doc), monkeypatch)
    assert_same(whole, stream)
    assert stream.doc["meta_invalid"] == [1] and stream.doc["current_flow_id"] == "c"


def test_stream_matches_memory_for_top_level_list(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    doc = [{"id": "a", "w": 0.1}, {"id": "a"}, {"name": "x"}]
    whole, stream = load_both(write(tmp_path / "f.json", doc, indent=False), monkeypatch)
    assert_same(whole, stream)


def test_stream_keeps_top_level_keys_after_flows(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f.json"
    path.write_bytes(b'{"flows": [{"id": "a"}, {"id": "b"}], "current_flow": "b",'
                     b' "meta": {"file_revision": 9}, "later": {"x": [1.5, 2]}, "version": "1.2"}')
    whole, stream = load_both(path, monkeypatch)
    assert_same(whole, stream)
    assert stream.doc["current_flow_id"] == "b" and stream.doc["later"] == {"x": [1.5, 2]}
    assert stream.doc["meta"]["file_revision"] == 9 and stream.source_version == "1.2"


def test_stream_flows_item_key_falls_back_to_memory(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    doc = {"flows.item": {"id": "not a flow"}, "flows": [{"id": "a"}]}
    whole, stream = load_both(write(tmp_path / "f.json", doc), monkeypatch)
    assert_same(whole, stream)
    assert list(stream.doc["flows"]) == ["a"]


def test_stream_floats_are_floats_not_decimal(tmp_path: Path) -> None:
    path = write(tmp_path / "f.json", {"flows": [{"id": "a", "x": 1.1, "y": [2.5e10, 3]}]})
    got = load_file(path, stream_threshold=STREAM)
    flow = got.doc["flows"]["a"]
    assert type(flow["x"]) is float and flow["y"] == [2.5e10, 3] and type(flow["y"][1]) is int
    assert not any(isinstance(v, Decimal) for v in flow["y"])


def test_big_3_0_file_is_not_streamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = {"version": "3.0", "meta": {"pad": "x" * 1000}, "current_flow_id": None,
           "flows": {f"f{i}": {"id": f"f{i}", "name": "", "plans": [], "created": T0,
                               "updated": T0, "revision": 0} for i in range(100)}}
    path = write(tmp_path / "f.json", doc)

    def refuse(*args: object) -> None:
        raise AssertionError("a 3.0 file must be parsed with orjson")

    monkeypatch.setattr(loader, "_load_stream", refuse)
    got = load_file(path, stream_threshold=STREAM)
    assert len(got.doc["flows"]) == 100


def test_3_0_file_with_version_last_is_streamed_correctly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f.json"
    path.write_bytes(b'{"flows": {"a": {"id": "a", "name": "n", "plans": [], "created": "c",'
                     b' "updated": "u", "revision": 1}}, "current_flow_id": "a",'
                     b' "meta": {"revision": 1, "file_revision": 1}, "version": "3.0"}')
    whole, stream = load_both(path, monkeypatch)
    assert_same(whole, stream)
    assert stream.migrated is False and stream.notes == []


# ------------------------------------------------------------ progress


@BOTH
def test_progress_grows_to_file_size(tmp_path: Path, threshold: int) -> None:
    path = write(tmp_path / "f.json", {"flows": [{"id": f"f{i}", "name": "x" * 200}
                                                  for i in range(3000)]})
    seen: list[int] = []
    got = load_file(path, stream_threshold=threshold, progress=seen.append)
    assert seen and seen == sorted(seen) and seen[-1] == got.size == path.stat().st_size
    if threshold == STREAM:
        assert len(seen) > 2


# ------------------------------------------------------------ big files


def write_legacy(path: Path, n: int) -> Path:
    """A pre-3.0 file of ``n`` flows, written in pieces (no big object in memory)."""
    with path.open("wb") as f:
        f.write(b'{"current_flow": {"id": "f3"}, "flows": [\n')
        for start in range(0, n, 10_000):
            chunk = [{"id": f"f{i}", "name": f"flow {i}", "plans": [{"t": "p", "w": 1.5}],
                      "created": T0} for i in range(start, min(n, start + 10_000))]
            body = orjson.dumps(chunk)[1:-1]
            f.write((b",\n" if start else b"") + body)
        f.write(b'\n], "settings": {"theme": "dark"}}')
    return path


def test_100k_legacy_flows_stream_with_bounded_memory(tmp_path: Path) -> None:
    """Streaming keeps the peak near the result; loading whole needs the input too."""
    path = write_legacy(tmp_path / "flows.json", 100_000)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        got = load_file(path, stream_threshold=1024 * 1024)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    result = current - base
    assert len(got.doc["flows"]) == 100_000
    assert got.doc["current_flow_id"] == "f3" and got.doc["settings"] == {"theme": "dark"}
    assert got.doc["flows"]["f99999"]["plans"] == [{"t": "p", "w": 1.5}]
    # well below twice the in-memory size of the result (measured: ~1.01x)
    assert peak - base < 1.3 * result
