"""A restart's packed map of digests, replayed without its dict and built later: the
same dict as replaying the records over a dict at once (the model: values, order, key
objects), the same undo for each file, and the order and values the load asks before
it is built are the dict's."""

from __future__ import annotations

import operator
import threading
from array import array
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from flowd import memory_load
from flowd.bases import FileMemory
from flowd.deferred_map import DeferredMap
from flowd.memory_records import PACK_FROM, Remembered, apply_delta, record_of
from flowd.storage import memory_file


def _fresh(fid: str) -> str:
    """An equal id that is another object (each sidecar record has its own strings)."""
    return "".join(list(fid))


def _model(records: list[Any]) -> tuple[dict[str, Any], list[dict[str, Any]], int, list]:
    """The records replayed over a plain dict, as the memory did before it deferred."""
    m: dict[str, Any] = {}
    undos, redos = [], []
    for i, (_entry, redo, packed) in enumerate(records):
        if packed is not None:
            whole = dict(zip(*packed, strict=True))
            whole.update(redo)
            redo = whole
        if i == 0 and None not in redo.values():
            m = dict(redo)
            undos.append({})
        else:
            undos.append({fid: m.get(fid) for fid in redo} if i else {})
            apply_delta(m, redo)
        redos.append(redo)
    last_own = max((i for i, (e, _, _) in enumerate(records) if e.own), default=None)
    own_rev, overlays = -1, []
    if last_own is not None:
        for undo in reversed(undos[last_own + 1:]):
            apply_delta(m, undo)
        own_rev, overlays = records[last_own][0].revision, redos[last_own + 1:]
    return m, undos, own_rev, overlays


_IDS = [f"f{i}" for i in range(12)]
_delta = st.dictionaries(st.sampled_from(_IDS),
                         st.one_of(st.none(), st.integers(0, 50),
                                   st.tuples(st.integers(0, 9), st.integers(0, 9))),
                         max_size=6)


@settings(max_examples=400, deadline=None)
@given(base=st.lists(st.sampled_from(_IDS), min_size=1, max_size=10),
       first=st.dictionaries(st.sampled_from(_IDS),
                             st.tuples(st.integers(0, 9), st.integers(0, 9)), max_size=3),
       later=st.lists(st.tuples(_delta, st.booleans()), max_size=6),
       first_own=st.booleans(), slices=st.integers(1, 4), peek=st.booleans())
def test_a_deferred_rebuild_is_the_rebuild_at_once(base: list[str], first: dict,
                                                   later: list, first_own: bool,
                                                   slices: int, peek: bool) -> None:
    """Ids repeat in the packed part, records add, change, delete and re-add ids, own
    files and tool files alternate: whatever the records, the deferred map answers the
    load as the dict would, and builds into it."""
    ids = [_fresh(fid) for fid in base]
    packed = (ids, array("Q", range(100, 100 + len(ids))))
    records = [(Remembered(1, 10, None, first_own, 0.0, {}),
                {_fresh(k): v for k, v in first.items()}, packed)]
    for n, (delta, own) in enumerate(later, 2):
        records.append((Remembered(n, 10 * n, None, own, 0.0, {}),
                        {_fresh(k): v for k, v in delta.items()}, None))
    want, undos, own_rev, overlays = _model(records)

    got = memory_load.rebuild(records)
    assert [e.undo for e in got.entries] == undos
    assert (got.own_rev, got.overlays) == (own_rev, overlays)
    m = got.own
    assert isinstance(m, DeferredMap)
    if len(set(base)) == len(base):  # a repeated id: the order is only the loader's hint
        assert m.order() == list(want)
        assert all(map(operator.is_, m.order(), want))
    while not m.step(slices):
        if peek:
            m.order()  # asked while building: changes nothing
    built = m.built()
    assert list(built.items()) == list(want.items())
    assert all(map(operator.is_, built, want))
    assert m.order() == list(want)


def _sidecar(tmp_path: Any, n: int) -> dict[str, Any]:
    """A sidecar whose oldest file's map is packed (n flows), then a file that changes,
    adds and deletes a few; the map of that newest own file."""
    first = {f"f{i}": 1000 + i for i in range(n)}
    redo = {"f1": 7, "f2": None, "new": 9}
    memory_file.rewrite(tmp_path, [record_of(Remembered(1, 10, None, True, 0.0, {}), first),
                                   record_of(Remembered(2, 20, None, True, 0.0, {}), redo)])
    want = dict(first)
    apply_delta(want, redo)
    return want


def test_a_restarted_memory_reads_whole_while_it_settles(tmp_path: Any) -> None:
    """Packed at load, built by steps; whoever reads ``own`` meanwhile gets the whole
    map (built first), never a part of it."""
    want = _sidecar(tmp_path, PACK_FROM + 5)
    mem = FileMemory(tmp_path)
    mem.load()
    assert mem.settling and mem.ids() == list(want)
    mem.settle_step(100)
    assert mem.settling
    assert mem.own == want and list(mem.own) == list(want)
    assert not mem.settling
    mem.settle_step(100)  # nothing left: a no-op
    assert mem.own == want


def test_a_memory_settled_by_steps_and_by_another_thread_at_once_is_whole(
        tmp_path: Any) -> None:
    """The snapshot thread may read ``own`` while the loop builds it step by step: the
    lock makes the two one build."""
    want = _sidecar(tmp_path, 20 * PACK_FROM)
    mem = FileMemory(tmp_path)
    mem.load()
    got: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: got.append(dict(mem.own)))
    reader.start()
    for _ in range(10_000):  # bounded: 20 * PACK_FROM entries, 64 a step
        if not mem.settling:
            break
        mem.settle_step(64)
    reader.join(30)
    assert got == [want] and mem.own == want and not mem.settling


def test_a_packed_record_keeps_the_maps_order() -> None:
    """What the sidecar holds for a big map comes back as the same map in the same
    order, a pair and a deletion in the middle included: the packed list holds every
    id, in order (the loader's ids hint is that order)."""
    from flowd.memory_records import merged, parse_record_apart

    redo: dict[str, Any] = {f"f{i}": i * 3 for i in range(PACK_FROM)}
    redo = {**dict(list(redo.items())[:5]), "pair": (1, 2), "gone": None,
            **dict(list(redo.items())[5:])}
    entry, rest, packed = parse_record_apart(record_of(
        Remembered(1, 1, None, True, 0.0, {}), redo))
    assert packed is not None and packed[0] == list(redo)
    assert rest == {"pair": (1, 2), "gone": None} and entry.number == 1
    back = merged(packed, rest)
    assert back == redo and list(back) == list(redo)


def test_the_loops_step_never_waits_for_another_threads_build(tmp_path: Any) -> None:
    """While another thread builds the whole map (it holds the lock), the loop's step
    goes by at once: it must not stall requests for the rest of that build."""
    _sidecar(tmp_path, PACK_FROM + 5)
    mem = FileMemory(tmp_path)
    mem.load()
    with mem._settling:  # as the snapshot thread does while it builds
        done = threading.Event()
        stepper = threading.Thread(target=lambda: (mem.settle_step(), done.set()))
        stepper.start()
        assert done.wait(10) and mem.settling
    stepper.join(10)
    mem.settle_step(10 * PACK_FROM)
    assert not mem.settling
