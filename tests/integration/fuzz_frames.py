"""Hostile frame sources for the fuzz tests (test_fuzz.py): random bytes, truncated and
mutated valid requests, wrong types in every field, protocol oddities; and the daemon's own
parser's view of a frame, to leave out the valid writes."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import msgpack
from flowd_client import FlowdError
from flowd_client.protocol import PROTOCOL_VERSION, WRITE_OPS, build_request, parse_request
from store_probes import MISSING

SEED = 20240510

VALID_ARGS: dict[str, dict[str, Any]] = {
    "hello": {"version": PROTOCOL_VERSION}, "ping": {}, "get_flow": {"flow_id": MISSING},
    "get_all_flows": {"limit": 2}, "get_current": {}, "find_by_name": {"name": "f1"},
    "stats": {}, "history": {"since": 0}, "add_flow": {"name": "x", "plans": []},
    "update_flow": {"flow_id": MISSING, "name": "x"}, "delete_flow": {"flow_id": MISSING},
    "set_current": {"flow_id": MISSING},
    "append_plan": {"flow_id": MISSING, "plan": {"a": 1}},
    "update_plan": {"flow_id": MISSING, "plan": {}, "index": 0},
    "remove_plan": {"flow_id": MISSING, "index": 0},
    "move_plan": {"flow_id": MISSING, "src": 0, "dst": 0},
    "check": {"flow_id": MISSING, "revision": None},
    "batch": {"ops": [{"op": "update_flow", "args": {"flow_id": MISSING, "name": "x"}}]},
    "save": {"force": False},
}
HOSTILE: list[Any] = [None, True, False, -1, 0, 2**64 - 1, -(2**63), 1.5, float("nan"),
                      float("inf"), "", "s" * 300, b"\x00bin", [], [1, [2]], {}, {"k": 1},
                      {1: 2}, msgpack.ExtType(7, b"x")]


def valid_frames() -> list[bytes]:
    frames = [build_request(i, op, args) for i, (op, args) in enumerate(VALID_ARGS.items())
              if op != "check"]
    frames.append(build_request(99, "update_flow", {"flow_id": MISSING, "name": "x"},
                                key=("fuzz", 1)))
    return frames


def packb(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def random_frames(rng: random.Random, n: int) -> Iterator[bytes]:
    for _ in range(n):
        yield rng.randbytes(rng.choice([0, 1, 2, 3, 5, 8, 16, 64, 300]))


def truncated_frames() -> Iterator[bytes]:
    for frame in valid_frames():
        for cut in range(len(frame)):
            yield frame[:cut]


def mutated_frames(rng: random.Random, n: int) -> Iterator[bytes]:
    bases = valid_frames()
    for _ in range(n):
        b = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(b))
            action = rng.random()
            if action < 0.5:
                b[pos] = rng.randrange(256)
            elif action < 0.75:
                b.insert(pos, rng.randrange(256))
            else:
                del b[pos]
            if not b:
                b.append(0)
        yield bytes(b)


def wrong_type_frames() -> Iterator[bytes]:
    base = {"v": PROTOCOL_VERSION, "id": 1, "op": "ping", "args": {}}
    for field in ("v", "id", "op", "args", "key"):
        for bad in HOSTILE:
            yield packb({**base, field: bad})
    for op, args in VALID_ARGS.items():
        for name in args:
            for bad in HOSTILE:
                yield packb({**base, "op": op, "args": {**args, name: bad}})
        yield packb({**base, "op": op, "args": {**args, "unknown_field": 1}})
        yield packb({**base, "op": op, "args": [args]})
    item = VALID_ARGS["batch"]["ops"][0]
    for bad in HOSTILE:  # every field of a batch item, and the item itself
        yield packb({**base, "op": "batch", "args": {"ops": [{**item, "args": bad}]}})
        yield packb({**base, "op": "batch", "args": {"ops": [item, bad]}})


def unhashable_batch_op_frames() -> Iterator[bytes]:
    """Known to kill the daemon (see test_batch_op_of_unhashable_type in test_fuzz.py)."""
    base = {"v": PROTOCOL_VERSION, "id": 1, "op": "batch"}
    for bad in ([], [1, [2]], {}, {"k": 1}):
        yield packb({**base, "args": {"ops": [{"op": bad, "args": {}}]}})


def protocol_frames() -> Iterator[bytes]:
    base = {"v": PROTOCOL_VERSION, "id": 1, "op": "ping", "args": {}}
    yield packb({**base, "extra": 1})
    yield packb({**base, "op": "drop_all"})
    yield packb({**base, "op": "check", "args": VALID_ARGS["check"]})  # batch-only op
    yield packb({**base, 1: 2})
    for v in (0, 2, PROTOCOL_VERSION + 1000):
        yield packb({**base, "v": v})
    yield packb({**base, "op": "hello", "args": {"version": PROTOCOL_VERSION + 1}})
    yield packb(msgpack.ExtType(1, b"abc"))
    yield packb({**base, "args": {"x": msgpack.Timestamp(1, 0)}})
    yield packb(msgpack.Timestamp(1, 0))
    for head in (b"\xdb", b"\xc6", b"\xdd", b"\xdf", b"\xc9"):  # str/bin/array/map/ext 32
        yield head + b"\xff\xff\xff\xff" + b"abc"
        yield b"\x81\xa1v" + head + b"\x7f\xff\xff\xff"
    yield b"\x91" * 100_000 + b"\xc0"  # deep nesting in the codec
    deep: Any = 1
    for _ in range(100):
        deep = [deep]
    yield packb({**base, "op": "add_flow", "args": {"name": "deep", "plans": [{"d": deep}]}})
    yield packb({**base, "op": "add_flow", "args": {"name": "big", "plans": [
        {"s": "x" * (2 * 1024 * 1024)}]}})
    yield packb({**base, "op": "add_flow", "args": {"name": "n" * 5000}})
    yield packb({**base, "op": "get_all_flows", "args": {"limit": 10**6}})
    yield packb({**base, "op": "batch", "args": {"ops": [
        {"op": "check", "args": VALID_ARGS["check"]}] * 1001}})
    yield packb({**base, "op": "history", "args": {"since": 2**64 - 1}})
    yield packb({**base, "id": 2**64 - 1})


def parses(frame: bytes) -> tuple[str, dict[str, Any]] | None:
    """What the daemon's own parser makes of ``frame``: (op, args), or None if refused."""
    try:
        _, op, args, _ = parse_request(frame)
    except FlowdError:
        return None
    return op, args


def should_skip(frame: bytes) -> bool:
    """Valid writes would change the store on purpose; frames that make the parser raise
    something other than FlowdError are the known crash (test_batch_op_of_unhashable_type)."""
    try:
        parsed = parses(frame)
    except Exception:  # noqa: BLE001
        return True
    return parsed is not None and parsed[0] in WRITE_OPS


def known_internal(frame: bytes) -> bool:
    """The one known INTERNAL answer to bad input (test_history_since_null)."""
    parsed = parses(frame)
    return parsed is not None and parsed[0] == "history" and parsed[1].get("since") is None


def all_fuzz_frames() -> Iterator[bytes]:
    rng = random.Random(SEED)
    yield from random_frames(rng, 800)
    yield from truncated_frames()
    yield from mutated_frames(rng, 1200)
    yield from wrong_type_frames()
    yield from protocol_frames()

