"""Hostile frames from raw zmq sockets: the daemon answers or drops, never dies, never changes.

A few thousand frames (random bytes, truncated and mutated valid requests, wrong types in
every field, unknown fields and ops, wrong versions, msgpack ext types, huge declared
lengths, oversize and deeply nested frames, odd envelopes) go to the daemon through a
DEALER and a REQ socket. Frames that happen to parse as valid writes are not sent (the
client-side parser is the daemon's), so the store must end exactly as it began plus the
few valid writes sent on purpose: same revision, same flows, same flows.json content.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from flowd_client import FlowClient, FlowdError
from flowd_client.discovery import read_lock_info
from flowd_client.protocol import (
    MAX_REQUEST_BYTES,
    PROTOCOL_VERSION,
    WRITE_OPS,
    build_request,
    parse_request,
    unpack,
)

SEED = 20240510
BURST = 200
REPLY_WAIT = 20.0
MISSING = "flow_00000000"


def flow_state(data_dir: Path) -> dict[str, Any]:
    doc = json.loads((data_dir / "flows.json").read_text(encoding="utf-8"))
    return {"flows": doc["flows"], "current": doc["current_flow_id"],
            "revision": doc["meta"]["revision"]}


class Raw:
    """A raw socket to the daemon, reopened when the daemon drops it."""

    def __init__(self, data_dir: Path, kind: int) -> None:
        self.endpoint = read_lock_info(data_dir)["endpoint"]
        self.ctx = zmq.Context()
        self.kind = kind
        self.sock = self._open()

    def _open(self) -> zmq.Socket:
        sock = self.ctx.socket(self.kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDTIMEO, 10_000)  # a dead daemon must fail the test, not hang it
        sock.connect(self.endpoint)
        return sock

    def reopen(self) -> None:
        self.sock.close(0)
        self.sock = self._open()

    def recv(self, timeout: float = REPLY_WAIT) -> dict[str, Any] | None:
        if not self.sock.poll(int(timeout * 1000)):
            return None
        frames = self.sock.recv_multipart()
        reply = unpack(frames[-1], 1 << 30)
        assert isinstance(reply, dict) and ("result" in reply or "error" in reply), reply
        return reply

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


@pytest.fixture
def setup(daemon) -> Iterator[tuple[Any, FlowClient, dict[str, Any]]]:
    with daemon.client() as c:
        ids = [c.add_flow(f"f{i}", [{"id": i, "t": "텍스트"}]) for i in range(5)]
        c.set_current(ids[1])
        assert c.save(force=True) is True
        yield daemon, c, {"ids": ids, "flows": c.get_all_flows(), "current": c.current_flow_id,
                          "revision": c.ping()["revision"],
                          "file": flow_state(daemon.data_dir)}


# ------------------------------------------------------------------ frame sources

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
    """Known to kill the daemon (see test_batch_op_of_unhashable_type below)."""
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


# ------------------------------------------------------------------ the checks


def assert_unchanged(daemon: Any, c: FlowClient, before: dict[str, Any]) -> None:
    assert daemon.proc.poll() is None, daemon.read_log()
    assert c.ping()["pong"] is True
    assert c.ping()["revision"] == before["revision"]
    assert c.get_all_flows() == before["flows"] and c.current_flow_id == before["current"]


def send_burst(raw: Raw, frames: list[bytes]) -> list[dict[str, Any]]:
    for frame in frames:
        raw.sock.send(frame)
    replies = []
    for _ in frames:
        reply = raw.recv()
        assert reply is not None, "a frame got no reply"
        replies.append(reply)
    return replies


def test_dealer_fuzz(setup) -> None:
    daemon, c, before = setup
    frames = list(all_fuzz_frames())
    to_send = [f for f in frames if not should_skip(f)]
    codes: dict[str, int] = {}
    raw = Raw(daemon.data_dir, zmq.DEALER)
    try:
        for frame in to_send:  # one at a time, so that each reply belongs to its frame
            raw.sock.send(frame)
            reply = raw.recv()
            assert reply is not None, f"no reply to {frame[:80]!r}"
            if "error" in reply:
                code = reply["error"]["code"]
                codes[code] = codes.get(code, 0) + 1
                assert isinstance(reply["error"]["message"], str)
                # bad input is refused, not crashed on
                assert code != "INTERNAL" or known_internal(frame), (frame[:200], reply)
    finally:
        raw.close()
    assert len(to_send) > 2000 and len(frames) - len(to_send) < 200
    assert {"PROTOCOL", "INVALID_ARGUMENT", "UNKNOWN_OP", "UNSUPPORTED_VERSION",
            "TOO_LARGE"} <= set(codes), codes
    assert_unchanged(daemon, c, before)


def test_wrong_version_names_both(setup) -> None:
    daemon = setup[0]
    raw = Raw(daemon.data_dir, zmq.DEALER)
    try:
        raw.sock.send(packb({"v": PROTOCOL_VERSION + 1, "id": 5, "op": "ping", "args": {}}))
        err = raw.recv()["error"]
        raw.sock.send(build_request(6, "hello", {"version": PROTOCOL_VERSION + 1}))
        err2 = raw.recv()["error"]
    finally:
        raw.close()
    for e in (err, err2):
        assert e["code"] == "UNSUPPORTED_VERSION"
        assert str(PROTOCOL_VERSION + 1) in e["message"] and str(PROTOCOL_VERSION) in e["message"]


def test_req_socket_fuzz(setup) -> None:
    """REQ adds the empty delimiter frame: the daemon must answer in the same envelope."""
    daemon, c, before = setup
    raw = Raw(daemon.data_dir, zmq.REQ)
    rng = random.Random(SEED + 1)
    frames = [f for f in [*random_frames(rng, 150), *mutated_frames(rng, 150),
                          *protocol_frames()] if not should_skip(f)]
    try:
        for frame in frames:
            raw.sock.send(frame)
            reply = raw.recv()
            assert reply is not None, frame[:80]
        raw.sock.send(build_request(1, "ping", {}))
        assert raw.recv()["result"]["pong"] is True
    finally:
        raw.close()
    assert_unchanged(daemon, c, before)


def test_odd_envelopes_and_oversize_frames(setup) -> None:
    daemon, c, before = setup
    raw = Raw(daemon.data_dir, zmq.DEALER)
    ping = build_request(1, "ping", {})
    add = build_request(2, "add_flow", {"name": "enveloped"})
    try:
        for frames in ([b"a", b"b", add], [b"", b"", add], [b"x", add], [b"", b"x", b"y", add],
                       [add, b""], [b"", add, add]):
            raw.sock.send_multipart(frames)
        raw.sock.send(ping)  # answered; the odd envelopes above were dropped unanswered
        reply = raw.recv()
        assert reply is not None and reply["id"] == 1
        assert raw.recv(timeout=0.5) is None
        raw.sock.send_multipart([b"", ping])  # a REQ-style envelope is answered in kind
        assert raw.recv()["id"] == 1
        for size in (MAX_REQUEST_BYTES + 1, MAX_REQUEST_BYTES + 1000):
            raw.reopen()
            raw.sock.send(b"\x00" * size)  # the daemon drops this connection
            assert raw.recv(timeout=1.0) is None
            assert daemon.proc.poll() is None and c.ping()["pong"] is True
        big = packb({"v": 1, "id": 3, "op": "add_flow",
                     "args": {"name": "big", "plans": [{"s": "y" * MAX_REQUEST_BYTES}]}})
        raw.reopen()
        raw.sock.send(big)
        assert raw.recv(timeout=1.0) is None
        raw.reopen()
        raw.sock.send(ping)  # a fresh connection is served
        assert raw.recv()["id"] == 1
    finally:
        raw.close()
    assert_unchanged(daemon, c, before)


def test_store_and_file_change_only_by_valid_requests(setup) -> None:
    daemon, c, before = setup
    raw = Raw(daemon.data_dir, zmq.DEALER)
    rng = random.Random(SEED + 2)
    try:
        junk = [f for f in mutated_frames(rng, 300) if not should_skip(f)]
        send_burst(raw, junk)
        add = send_burst(raw, [build_request(1, "add_flow", {"name": "valid"}, ("fz", 1))])[0]
        send_burst(raw, [f for f in truncated_frames() if not should_skip(f)])
        upd = send_burst(raw, [build_request(2, "update_flow", {
            "flow_id": before["ids"][0], "name": "renamed"}, ("fz", 2))])[0]
    finally:
        raw.close()
    new_id = add["result"]
    assert upd["result"]["name"] == "renamed"
    assert c.ping()["revision"] == before["revision"] + 2
    assert daemon.stop() == 0
    after = flow_state(daemon.data_dir)
    want = dict(before["file"]["flows"])
    assert after["flows"][new_id]["name"] == "valid"
    assert after["flows"][before["ids"][0]]["name"] == "renamed"
    del after["flows"][new_id]
    for key in ("name", "updated", "revision"):
        after["flows"][before["ids"][0]][key] = want[before["ids"][0]][key]
    assert after["flows"] == want
    assert after["current"] == new_id and after["revision"] == before["revision"] + 2


def test_batch_op_of_unhashable_type(setup) -> None:
    daemon, c, before = setup
    raw = Raw(daemon.data_dir, zmq.DEALER)
    try:
        for frame in unhashable_batch_op_frames():
            raw.sock.send(frame)
            reply = raw.recv(timeout=5.0)
            assert reply is not None and reply["error"]["code"] == "INVALID_ARGUMENT"
    finally:
        raw.close()
    assert_unchanged(daemon, c, before)


def test_history_since_null(setup) -> None:
    daemon = setup[0]
    raw = Raw(daemon.data_dir, zmq.DEALER)
    try:
        raw.sock.send(build_request(1, "history", {"since": None}))
        reply = raw.recv()
    finally:
        raw.close()
    assert reply is not None and reply["error"]["code"] == "INVALID_ARGUMENT"


def test_check_is_batch_only(setup) -> None:
    daemon = setup[0]
    raw = Raw(daemon.data_dir, zmq.DEALER)
    try:
        raw.sock.send(build_request(1, "check", {"flow_id": MISSING, "revision": None}))
        reply = raw.recv()
    finally:
        raw.close()
    assert reply is not None and "error" in reply, reply
