"""The sidecar's records: a big map's plain digests are packed, and every kind of
value (plain, pair, deletion) comes back exactly; a damaged pack is refused."""

from __future__ import annotations

import msgpack
import pytest

from flowd.memory_records import PACK_FROM, Remembered, merged, parse_record_apart, record_of


def _parsed(frame: dict) -> tuple[Remembered, dict]:
    """A record read back whole, as the memory's rebuild reads it."""
    entry, redo, packed = parse_record_apart(frame)
    return entry, redo if packed is None else merged(packed, redo)


def _round_trip(redo: dict) -> dict:
    entry = Remembered(3, 40, "f1", True, 1.5, {})
    frame = msgpack.unpackb(msgpack.packb(record_of(entry, redo)), raw=False)
    got, back = _parsed(frame)
    assert (got.number, got.revision, got.current, got.own, got.seen) == (3, 40, "f1", True, 1.5)
    return back


def test_a_big_map_is_packed_and_comes_back_exactly() -> None:
    redo: dict = {f"f{i}": (i * 2654435761) % (1 << 64) for i in range(PACK_FROM + 10)}
    redo["pair"], redo["gone"], redo["neg"] = (1, 2), None, -5  # the last: not a u64
    record = record_of(Remembered(1, 1, None, True, 0.0, {}), redo)
    assert "k" in record and len(record["d"]) == 3
    assert _round_trip(redo) == redo


def test_a_small_map_stays_a_map() -> None:
    redo = {"a": 5, "b": (1, 2), "c": None}
    assert "k" not in record_of(Remembered(1, 1, None, True, 0.0, {}), redo)
    assert _round_trip(redo) == redo


@pytest.mark.parametrize("k, v", [(["a", "b"], b"\0" * 15), (["a", 1], b"\0" * 16),
                                  ("ab", b"\0" * 16), (["a"], "x" * 8)])
def test_a_damaged_pack_is_refused(k, v) -> None:
    frame = {"n": 1, "r": 1, "c": None, "o": True, "t": 0.0, "d": {}, "k": k, "v": v}
    with pytest.raises(ValueError):
        _parsed(frame)


def test_new_ids_come_in_the_stores_order() -> None:
    """The newest map appends new ids in the store's order (not a set's), so that its
    order, and the sidecar's, stays the store's."""
    from types import MappingProxyType

    from flowd.memory_records import in_order

    lines = dict.fromkeys([f"f{i}" for i in range(100)], b"")
    assert in_order(lines, ["f99", "f97", "f98"]) == ["f97", "f98", "f99"]
    assert in_order(lines, ["f3", "f50", "f1"]) == ["f1", "f3", "f50"]
    assert in_order(MappingProxyType(lines), ["f2", "f1"]) == ["f2", "f1"]


def test_a_pack_of_the_plain_ids_only_still_reads() -> None:
    """Sidecars written before every id went into the pack list only the plain ones
    there, the others in ``d``: the same map comes back (those others last)."""
    import array

    ids = [f"f{i}" for i in range(PACK_FROM)]
    frame = {"n": 1, "r": 1, "c": None, "o": True, "t": 0.0, "d": {"pair": [1, 2]},
             "k": ids, "v": array.array("Q", range(PACK_FROM)).tobytes()}
    _, back = _parsed(frame)
    assert list(back.items()) == [*zip(ids, range(PACK_FROM), strict=True), ("pair", (1, 2))]
