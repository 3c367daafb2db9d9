"""flowd's own flows.json read back by its lines: exactly what was written, or
refused, or handed to the full parser; never a flow that is not the file's.

A file flowd wrote is split, not parsed, so its check must catch any byte
changed inside the flows; a file in any other layout (an older flowd's, a
tool's ``json.dump``) must fall back to the full parser, whatever its lines
look like; and a flow's name must read the same from its line as decoded.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowd import flow_lines
from flowd.flow_lines import FlowTable, name_key
from flowd.storage import lines_file, lines_split
from flowd.storage.migrate import CorruptFileError
from flowd.storage.snapshot import View, encode


def flow(fid: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"id": fid, "name": name, "plans": [{"t": "계획 \"따옴표\"", "n": 1.5}],
            "created": "2024-05-01T09:00:00", "updated": "2024-05-01T09:00:00",
            "revision": 3, **extra}


NAMES = ["plain", "한글 이름", 'with "quotes"', "back\\slash", "tab\there", "", "\u2028",
         '": {"id":"x"', "trailing\\"]
IDS = ["flow_00000001", "아이디", 'we"ird', "back\\id", "ctl\x01", "x" * 200]


def written(flows: dict[str, dict[str, Any]], **kw: Any) -> bytes:
    lines = {fid: flow_lines.encode(fid, f) for fid, f in flows.items()}
    return encode(View(lines, next(iter(lines), None), 9, 4, **kw)).whole()


def test_every_id_and_name_round_trips_through_a_line() -> None:
    for fid in IDS:
        for name in NAMES:
            f = flow(fid, name, extra_key={"k": [1, None]})
            line = flow_lines.encode(fid, f)
            assert flow_lines.decode(fid, line) == f
            assert flow_lines.name_of(fid, line) == name


def test_a_flow_with_its_keys_in_any_order_still_has_its_name_read() -> None:
    f = {"plans": [], "revision": 1, "name": "late", "id": "flow_1"}
    line = flow_lines.encode("flow_1", f)
    assert flow_lines.decode("flow_1", line) == f and flow_lines.name_of("flow_1", line) == "late"


def test_a_written_file_reads_back_by_its_lines_with_its_odd_ids_parsed() -> None:
    flows = {fid: flow(fid, fid + " name") for fid in ["flow_a", "flow_b", "flow_c"]}
    # unknown top-level keys, the last a map (its closing brace looks like the flows')
    extra = {"tail": [1], "settings": {"theme": {"dark": True}}}
    data = written(flows, extra=extra, meta_extra={"tool": "x"})
    doc = lines_file.read_own(data)
    assert doc is not None and isinstance(doc["flows"], FlowTable)
    assert dict(doc["flows"].items()) == flows and doc["tail"] == [1]
    assert doc["settings"] == json.loads(data)["settings"] == extra["settings"]
    assert json.loads(data)["flows"] == flows
    odd = written({fid: flow(fid, "n") for fid in IDS})
    assert lines_file.read_own(odd) is None  # escaped ids: the full parser reads it
    assert json.loads(odd)["flows"] == {fid: flow(fid, "n") for fid in IDS}


@pytest.mark.parametrize(("where", "skip"), [("name", 2), ("plans", 2), ("revision", 0)])
def test_a_byte_changed_inside_a_flow_fails_the_check(where: str, skip: int) -> None:
    """A digit of the revision becomes another digit: still valid JSON, still refused."""
    data = written({f"flow_{i}": flow(f"flow_{i}", f"name {i}") for i in range(50)})
    key = b'"%s":' % where.encode()
    at = data.index(key, data.index(b"flow_25\": {")) + len(key) + skip
    flipped = data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]
    with pytest.raises(CorruptFileError, match="check"):
        lines_file.read_own(flipped)


def test_other_layouts_go_to_the_full_parser() -> None:
    flows = {"flow_a": flow("flow_a", "a")}
    data = written(flows)
    doc = json.loads(data)
    tool = json.dumps(doc, indent=2, ensure_ascii=False).encode()  # an old tool's save
    assert lines_file.read_own(tool) is None
    del doc["meta"][flow_lines.CHECK_KEY]  # an older flowd's file: no check
    assert lines_file.read_own(json.dumps(doc, indent=2).encode()) is None
    assert lines_file.read_own(data[:-40]) is None  # truncated
    assert lines_file.read_own(b"") is None
    assert lines_file.read_own(data.replace(b'    "flow_a"', b'   "flow_a"')) is None


def test_an_empty_store_round_trips() -> None:
    data = written({})
    doc = lines_file.read_own(data)
    assert doc is not None and len(doc["flows"]) == 0 and json.loads(data)["flows"] == {}


def test_a_duplicate_id_goes_to_the_full_parser() -> None:
    data = written({"flow_a": flow("flow_a", "a"), "flow_b": flow("flow_b", "b")})
    dup = data.replace(b'    "flow_b": {"id":"flow_b"', b'    "flow_a": {"id":"flow_b"')
    start = dup.index(b'"flows": {') + len(b'"flows": {')
    end = dup.index(b"\n  }", start)
    crc = f"{zlib.crc32(dup[start:end]):08x}".encode()
    at = dup.index(b'"lines_crc32": "') + len(b'"lines_crc32": "')
    dup = dup[:at] + crc + dup[at + 8:]
    assert lines_file.read_own(dup) is None


@pytest.mark.parametrize("region", [1, 100, 333, 1 << 20])
def test_regions_of_any_size_read_the_same_lines(monkeypatch, region: int) -> None:
    """The body is split in regions at line ends: every line read once, in order."""
    flows = {f"flow_{i}": flow(f"flow_{i}", NAMES[i % len(NAMES)]) for i in range(40)}
    data = written(flows)
    monkeypatch.setattr(lines_split, "REGION", region)
    doc = lines_file.read_own(data)
    assert doc is not None and list(doc["flows"]) == list(flows)
    assert dict(doc["flows"].items()) == flows
    assert list(doc["flows"].name_keys) == [name_key(f["name"]) for f in flows.values()]


@pytest.mark.parametrize("chunk", [1, 3, 40, 41, 1000])
def test_a_file_written_in_chunks_of_any_size_is_the_same_file(monkeypatch, chunk: int) -> None:
    """Lines are joined a chunk at a time (the GIL is let go between chunks): the file and
    its check are those of one join whatever the chunk, at every seam and the last."""
    flows = {f"flow_{i}": flow(f"flow_{i}", NAMES[i % len(NAMES)]) for i in range(40)}
    whole = written(flows)
    monkeypatch.setattr(lines_file, "CHUNK", chunk)
    chunked = written(flows)
    assert unsaved(chunked) == unsaved(whole)  # only the clock's meta.last_saved may differ
    doc = lines_file.read_own(chunked)
    assert doc is not None and dict(doc["flows"].items()) == flows


def unsaved(data: bytes) -> bytes:
    """The file without its write time (``meta.last_saved``, the clock's milliseconds)."""
    head, sep, rest = data.partition(b'"last_saved": "')
    assert sep, "no last_saved in the file"
    return head + sep + rest[rest.index(b'"'):]


def rechecked(data: bytes) -> bytes:
    """The file with its check recomputed: only the content of its lines is wrong."""
    start = data.index(b'"flows": {') + len(b'"flows": {')
    end = data.index(b"\n  }", start)
    at = data.index(b'"lines_crc32": "') + len(b'"lines_crc32": "')
    return data[:at] + f"{zlib.crc32(data[start:end]):08x}".encode() + data[at + 8:]


@pytest.mark.parametrize("bad", [b'bad\\q', b"\xff\xfe"])
@pytest.mark.parametrize("where", ["name", "id"])
def test_text_no_encoder_writes_sends_the_file_to_the_full_parser(bad: bytes,
                                                                  where: str) -> None:
    """A line in flowd's layout whose id or name is not valid JSON text (with a matching
    check, so only its content is wrong) is never taken as one: the parser decides."""
    fid, name = ("PLACE", "n") if where == "id" else ("flow_a", "PLACE")
    data = written({fid: flow(fid, name)}).replace(b"PLACE", bad)
    assert lines_file.read_own(rechecked(data)) is None


def test_halves_of_a_character_in_two_names_are_no_text() -> None:
    """Names are checked as text together: a character cut between two names (each
    half invalid UTF-8, the two joined valid) must not pass as one."""
    flows = {"flow_a": flow("flow_a", "AAAA"), "flow_b": flow("flow_b", "BBBB")}
    data = written(flows).replace(b"AAAA", b"a\xea\xb0").replace(b"BBBB", b"\x80b")
    assert lines_file.read_own(rechecked(data)) is None


def test_a_store_read_by_its_lines_finds_every_name() -> None:
    """The loader hashes names from the file's bytes (escaped ones decoded first): the
    keys must be the ones the store computes from a name asked for."""
    from flowd.store import Store

    flows = {f"flow_{i}": flow(f"flow_{i}", name) for i, name in enumerate(NAMES * 2)}
    doc = lines_file.read_own(written(flows))
    assert doc is not None and doc["flows"].name_keys is not None
    store = Store()
    store.load(doc)
    for name in NAMES:
        want = [fid for fid, f in flows.items() if f["name"] == name]
        assert [f["id"] for f in store.find_by_name(name)] == want
    assert store.find_by_name("absent") == []


@pytest.mark.parametrize("hint", ["same", "shorter", "longer", "other", "reordered", "none",
                                  "joined"])
def test_ids_given_key_the_table_only_where_they_match(monkeypatch, hint: str) -> None:
    """The memory of written files hands the loader the ids it expects: the table is
    keyed by those strings where a region's ids match them in order, and whatever the
    hint, the table holds exactly the file's lines, in the file's order."""
    monkeypatch.setattr(lines_split, "REGION", 300)  # several regions
    flows = {f"flow_{i:02}": flow(f"flow_{i:02}", f"n{i}") for i in range(30)}
    data = written(flows)
    mine = [bytes(fid, "ascii").decode() for fid in flows]  # equal, not the same objects
    ids = {"same": mine, "shorter": mine[:7], "longer": [*mine, "flow_x"],
           "other": ["flow_zz", *mine[1:]], "reordered": mine[::-1], "none": [],
           # the last two ids as one: joined by newlines, the same bytes as the two
           "joined": [*mine[:-2], "\n".join(mine[-2:])]}[hint]
    doc = lines_file.read_own(data, ids)
    assert doc is not None
    table = doc["flows"]
    assert list(table) == list(flows) and dict(table.items()) == flows
    shared = [fid for fid in table if any(fid is m for m in mine)]
    if hint == "same":
        assert shared == list(flows)
    elif hint in ("other", "reordered", "none"):
        assert next(iter(table)) is not mine[0]  # the first region does not match


def _outcome(data: bytes | list[bytes], ids: list[str]) -> Any:
    """What read_own makes of a file: refused (its error), not its layout (None), or the
    document with the flows' lines and name keys laid out."""
    try:
        doc = lines_file.read_own(data, ids)
    except CorruptFileError as exc:
        return ("refused", str(exc))
    if doc is None:
        return None
    table = doc.pop("flows")
    return doc, list(table.lines.items()), list(table.name_keys or [])


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    at = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *at], [*at, len(data)], strict=True)]


_FILES = {
    "plain": written({f"flow_{i:02}": flow(f"flow_{i:02}", f"n{i}") for i in range(40)}),
    "odd names and extras": written(
        {f"f{i}": flow(f"f{i}", NAMES[i % len(NAMES)]) for i in range(20)},
        extra={"tail": [1], "settings": {"theme": {"dark": True}}}, meta_extra={"tool": "x"}),
    "empty": written({}),
    "one long line": written({"flow_big": flow("flow_big", "big", pad="p" * 3000)}),
}


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(_FILES)), cuts=st.lists(st.integers(0, 10**6), max_size=30),
       damage=st.one_of(st.none(), st.tuples(st.integers(0, 10**6), st.integers(0, 255))),
       region=st.sampled_from([64, 300, 4 << 20]), hinted=st.booleans())
def test_a_file_read_in_pieces_reads_as_the_whole(name: str, cuts: list[int],
                                                  damage: tuple[int, int] | None,
                                                  region: int, hinted: bool) -> None:
    """The loader hands flowd's own file over in pieces, dropped as they are split: cut
    anywhere (inside a line, a separator, the head, the last bytes), damaged anywhere,
    it reads exactly as the same bytes in one piece: the same lines, refused alike, or
    left to the full parser alike."""
    data = bytearray(_FILES[name])
    if damage is not None:
        data[damage[0] % len(data)] = damage[1]
    whole = bytes(data)
    ids = [fid for fid, _ in (_outcome(_FILES[name], []) or (None, []))[1]] if hinted else []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lines_split, "REGION", region)
        pieces = _pieces(whole, cuts)
        got = _outcome(pieces, ids)
        assert got == _outcome(whole, ids)
        if got is not None and got[0] != "refused":
            assert pieces == []  # a file split: every piece dropped as it went


@pytest.mark.parametrize("name", sorted(_FILES))
def test_a_file_cut_in_two_anywhere_reads_as_the_whole(monkeypatch, name: str) -> None:
    """Every place a piece can end, tried: in the head, just before or after the first
    flow, in a separator, in the last bytes."""
    monkeypatch.setattr(lines_split, "REGION", 64)
    data = _FILES[name]
    want = _outcome(data, [])
    assert want is not None and want[0] != "refused"
    for cut in range(len(data) + 1):
        assert _outcome([data[:cut], data[cut:]], []) == want, cut


@settings(max_examples=500, deadline=None)
@given(data=st.lists(st.sampled_from([b"a", b",", b"\n", b",\n", b"}", b"\n  }"]),
                     max_size=30).map(b"".join),
       start=st.integers(0, 40), stop=st.integers(0, 40))
def test_a_region_split_in_place_is_the_region_split(data: bytes, start: int,
                                                     stop: int) -> None:
    """A piece's lines are split without copying them out when nothing but its seams
    lies outside them: always the very lines of the region copied out and split."""
    start, stop = min(start, len(data)), min(stop, len(data))
    if start < stop and data.startswith(b"\n", start):
        assert lines_split._lines(data, start, stop) == data[start + 1:stop].split(b",\n")


@settings(max_examples=500, deadline=None)
@given(data=st.lists(st.sampled_from([b"", b"a", b",", b"\n", b",\n", b",\n,\n", b"\n,"]),
                     max_size=30).map(b"".join))
def test_the_lines_split_is_bytes_split(data: bytes) -> None:
    """The regex that splits the lines (faster than ``bytes.split`` at a two-byte
    separator) gives the very parts ``bytes.split`` gives, as bytes: empty ones, the
    ends, runs of separators."""
    got = lines_split._split_lines(data)
    assert got == data.split(b",\n")
    assert all(type(part) is bytes for part in got)


def test_a_piece_of_whole_lines_is_split_in_place(monkeypatch) -> None:
    """The loader's middle pieces take the in-place split (the copy it saves is what
    this is for), and read as the whole."""
    calls = []
    split = lines_split._split_lines

    def spy(data: bytes) -> list[bytes]:
        calls.append(len(data))
        return split(data)

    monkeypatch.setattr(lines_split, "_split_lines", spy)
    data = _FILES["plain"]
    at = [data.index(b'\n    "flow_10"') - 1, data.index(b'\n    "flow_20"') + 30]
    pieces = _pieces(data, at)
    got = _outcome(list(pieces), [])
    assert got == _outcome(data, [])
    assert len(pieces[1]) in calls  # the middle piece split whole, not a copy of it
