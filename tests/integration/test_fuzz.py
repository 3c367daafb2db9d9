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

import pytest
import zmq
from flowd_client import FlowClient
from flowd_client.protocol import (
    MAX_REQUEST_BYTES,
    PROTOCOL_VERSION,
    build_request,
    socket_limit,
)
from fuzz_frames import (
    SEED,
    all_fuzz_frames,
    known_internal,
    mutated_frames,
    packb,
    protocol_frames,
    random_frames,
    should_skip,
    truncated_frames,
    unhashable_batch_op_frames,
)
from raw_socket import Raw
from store_probes import MISSING


def flow_state(data_dir: Path) -> dict[str, Any]:
    doc = json.loads((data_dir / "flows.json").read_text(encoding="utf-8"))
    return {"flows": doc["flows"], "current": doc["current_flow_id"],
            "revision": doc["meta"]["revision"]}


@pytest.fixture
def setup(daemon) -> Iterator[tuple[Any, FlowClient, dict[str, Any]]]:
    with daemon.client() as c:
        ids = [c.add_flow(f"f{i}", [{"id": i, "t": "텍스트"}]) for i in range(5)]
        c.set_current(ids[1])
        assert c.save(force=True) is True
        yield daemon, c, {"ids": ids, "flows": c.get_all_flows(), "current": c.current_flow_id,
                          "revision": c.ping()["revision"],
                          "file": flow_state(daemon.data_dir)}


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
                       [add, b""], [b"", add, add], [b"x"] * 10_000 + [add]):
            raw.sock.send_multipart(frames)
        raw.sock.send(ping)  # answered; the odd envelopes above were dropped unanswered
        reply = raw.recv()
        assert reply is not None and reply["id"] == 1
        assert raw.recv(timeout=0.5) is None
        raw.sock.send_multipart([b"", ping])  # a REQ-style envelope is answered in kind
        assert raw.recv()["id"] == 1
        for size in (MAX_REQUEST_BYTES + 1, MAX_REQUEST_BYTES + 1000):
            raw.reopen()
            raw.sock.send(b"\x00" * size)  # over the limit, under ZMQ_MAXMSGSIZE: an answer
            reply = raw.recv()
            assert reply["error"]["code"] == "TOO_LARGE" and reply["id"] is None
        raw.reopen()
        raw.sock.send(b"\x00" * (socket_limit(MAX_REQUEST_BYTES) + 1))  # ZeroMQ drops it
        assert raw.recv(timeout=1.0) is None
        assert daemon.proc.poll() is None and c.ping()["pong"] is True
        big = packb({"v": 1, "id": 3, "op": "add_flow",
                     "args": {"name": "big", "plans": [{"s": "y" * MAX_REQUEST_BYTES}]}})
        raw.reopen()
        raw.sock.send(big)
        reply = raw.recv()  # matched by its id, read from the frame's first bytes
        assert reply["id"] == 3 and reply["error"]["code"] == "TOO_LARGE"
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
