"""The wire protocol without a daemon: the op table, requests, the error table (value
checks: test_values.py)."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import pytest
from flowd_client import errors, protocol
from flowd_client.errors import (
    ERRORS,
    CompactedError,
    ConflictError,
    FlowdError,
    InvalidArgumentError,
    ProtocolError,
    TooLargeError,
    UnknownOpError,
    UnsupportedVersionError,
)
from flowd_client.protocol import (
    ARGS,
    INT_MAX,
    MAX_BATCH_OPS,
    MAX_NAME_CHARS,
    MAX_PAGE,
    MAX_REQUEST_BYTES,
    PROTOCOL_VERSION,
    build_request,
    check_args,
    pack,
    parse_request,
    unpack,
)

FID = "flow_0123abcd"

#: One valid argument map per op, with every optional argument given.
VALID: dict[str, dict[str, Any]] = {
    "hello": {"version": PROTOCOL_VERSION, "client": "test"},
    "ping": {},
    "get_flow": {"flow_id": FID},
    "get_all_flows": {"limit": 10, "cursor": "abc", "json": True},
    "get_current": {},
    "find_by_name": {"name": "n"},
    "stats": {},
    "history": {"since": 0},
    "add_flow": {"name": "n", "plans": [{"a": 1}]},
    "update_flow": {"flow_id": FID, "name": "n", "plans": [], "if_revision": 3},
    "delete_flow": {"flow_id": FID, "if_revision": 3},
    "set_current": {"flow_id": FID},
    "append_plan": {"flow_id": FID, "plan": {"t": "x"}, "if_revision": 1},
    "update_plan": {"flow_id": FID, "plan": {"t": "x"}, "index": 0, "plan_id": "p",
                    "if_revision": 1},
    "remove_plan": {"flow_id": FID, "index": -1, "plan_id": 7, "if_revision": 1},
    "move_plan": {"flow_id": FID, "src": 0, "dst": 1, "if_revision": 1},
    "check": {"flow_id": FID, "revision": None},
    "batch": {"ops": [{"op": "add_flow", "args": {"name": "x"}},
                      {"op": "check", "args": {"flow_id": FID, "revision": 2}}]},
    "save": {"force": True},
}

#: Values no argument of any op accepts.
NEVER_VALID: list[Any] = [b"bytes", 1.5, math.nan, object(), ("t",), {1, 2}]


def test_valid_table_covers_every_op() -> None:
    assert set(VALID) == set(ARGS)
    for op, args in VALID.items():
        assert set(args) <= set(ARGS[op]), op
        check_args(op, args)
        required = {k: v for k, v in args.items() if ARGS[op][k][1]}
        check_args(op, required)


# --------------------------------------------------------------- check_args


def test_unknown_op() -> None:
    with pytest.raises(UnknownOpError):
        check_args("drop_everything", {})
    with pytest.raises(UnknownOpError):
        check_args("", {})


@pytest.mark.parametrize("op", sorted(ARGS))
def test_args_must_be_a_map(op: str) -> None:
    for bad in (None, [], "x", 1, [("flow_id", FID)]):
        with pytest.raises(InvalidArgumentError, match="args must be a map"):
            check_args(op, bad)


@pytest.mark.parametrize("op", sorted(ARGS))
def test_unknown_argument_refused(op: str) -> None:
    for extra in ("bogus", "flow_id_", "Name"):
        if extra in ARGS[op]:
            continue
        with pytest.raises(InvalidArgumentError, match="unknown argument"):
            check_args(op, {**VALID[op], extra: 1})
    with pytest.raises(InvalidArgumentError, match="unknown argument"):
        check_args(op, {**VALID[op], 1: 1})  # non-string key


@pytest.mark.parametrize("op", sorted(ARGS))
def test_missing_required_argument_refused(op: str) -> None:
    for name, (_, required) in ARGS[op].items():
        args = {k: v for k, v in VALID[op].items() if k != name}
        if required:
            assert name in VALID[op], f"VALID[{op!r}] lacks required {name!r}"
            with pytest.raises(InvalidArgumentError, match=f"missing argument '{name}'"):
                check_args(op, args)
        else:
            check_args(op, args)


@pytest.mark.parametrize("op", sorted(ARGS))
def test_ill_typed_argument_refused(op: str) -> None:
    for name in ARGS[op]:
        for bad in NEVER_VALID:
            with pytest.raises(FlowdError) as err:
                check_args(op, {**VALID[op], name: bad})
            assert isinstance(err.value, InvalidArgumentError | TooLargeError), (op, name, bad)


BOOL_REFUSED = [("hello", "version"), ("get_all_flows", "limit"), ("history", "since"),
                ("update_flow", "if_revision"), ("update_plan", "index"),
                ("update_plan", "plan_id"), ("move_plan", "src"), ("move_plan", "dst"),
                ("check", "revision")]


@pytest.mark.parametrize("op,name", BOOL_REFUSED)
def test_bool_is_not_an_integer(op: str, name: str) -> None:
    with pytest.raises(InvalidArgumentError):
        check_args(op, {**VALID[op], name: True})


@pytest.mark.parametrize("op,name,value", [
    ("get_flow", "flow_id", None), ("find_by_name", "name", None),
    ("find_by_name", "name", "x" * (MAX_NAME_CHARS + 1)),
    ("add_flow", "name", "x" * (MAX_NAME_CHARS + 1)),
    ("add_flow", "plans", [1]), ("add_flow", "plans", {"a": 1}), ("add_flow", "plans", [[]]),
    ("update_flow", "if_revision", -1), ("update_flow", "if_revision", INT_MAX + 1),
    ("get_all_flows", "limit", 0), ("get_all_flows", "limit", MAX_PAGE + 1),
    ("get_all_flows", "cursor", 5), ("get_all_flows", "json", 1),
    ("get_all_flows", "json", None), ("history", "since", -1), ("history", "since", None),
    ("append_plan", "plan", None), ("append_plan", "plan", []),
    ("append_plan", "plan", {"k": b"x"}), ("update_plan", "plan_id", 1.0),
    ("move_plan", "src", None), ("save", "force", 1), ("save", "force", None),
    ("hello", "client", 3), ("check", "revision", "3"),
])
def test_specific_refusals(op: str, name: str, value: Any) -> None:
    with pytest.raises((InvalidArgumentError, TooLargeError)):
        check_args(op, {**VALID[op], name: value})


@pytest.mark.parametrize("op,name,value", [
    ("update_flow", "name", None), ("update_flow", "plans", None),
    ("update_flow", "if_revision", None), ("update_flow", "if_revision", INT_MAX),
    ("update_plan", "index", None), ("update_plan", "plan_id", None),
    ("update_plan", "index", -5), ("get_all_flows", "limit", MAX_PAGE),
    ("get_all_flows", "cursor", None), ("hello", "client", None),
    ("find_by_name", "name", "x" * MAX_NAME_CHARS), ("check", "revision", 0),
])
def test_specific_acceptances(op: str, name: str, value: Any) -> None:
    check_args(op, {**VALID[op], name: value})


def _batch(*items: Any) -> dict[str, Any]:
    return {"ops": list(items)}


def test_batch_ops_checked() -> None:
    check_args("batch", _batch({"op": "check", "args": {"flow_id": FID, "revision": 1}}))
    for bad in ([], None, {}, "ops"):
        with pytest.raises(InvalidArgumentError, match="non-empty list"):
            check_args("batch", {"ops": bad})
    for op in ("batch", "save", "ping", "get_flow", "nope"):
        with pytest.raises(InvalidArgumentError, match="cannot be used in a batch"):
            check_args("batch", _batch({"op": op, "args": VALID.get(op, {})}))
    for item in ({"args": {}}, {"op": "add_flow", "args": {"name": "x"}, "x": 1}, "add_flow",
                 ["add_flow", {}], None):
        with pytest.raises(InvalidArgumentError, match="must be a map with"):
            check_args("batch", _batch(item))
    with pytest.raises(InvalidArgumentError, match=r"ops\[1\] \(update_flow\).*flow_id"):
        check_args("batch", _batch({"op": "add_flow", "args": {"name": "x"}},
                                   {"op": "update_flow", "args": {}}))
    with pytest.raises(InvalidArgumentError, match=r"ops\[0\] \(add_flow\)"):
        check_args("batch", _batch({"op": "add_flow"}))  # args default to {}: name missing
    with pytest.raises(InvalidArgumentError, match=r"ops\[0\] \(add_flow\): .*args must be a map"):
        check_args("batch", _batch({"op": "add_flow", "args": None}))


def test_batch_size_limit() -> None:
    item = {"op": "check", "args": {"flow_id": FID, "revision": None}}
    check_args("batch", _batch(*[item] * MAX_BATCH_OPS))
    with pytest.raises(TooLargeError):
        check_args("batch", _batch(*[item] * (MAX_BATCH_OPS + 1)))


@pytest.mark.parametrize("op", [[], {}, ["add_flow"], {"a": 1}, None, 1, b"add_flow",
                                "Add_flow"])
def test_batch_op_of_any_type_is_a_clean_refusal(op: Any) -> None:
    """An unhashable ``op`` inside a batch must be refused, not raise TypeError."""
    with pytest.raises(InvalidArgumentError):
        check_args("batch", _batch({"op": op, "args": {}}))


# --------------------------------------------------------------- requests


def _req(**fields: Any) -> bytes:
    msg = {"v": PROTOCOL_VERSION, "id": 7, "op": "ping", "args": {}}
    msg.update(fields)
    return pack({k: v for k, v in msg.items() if v is not _DROP})


_DROP = object()


def test_parse_request_roundtrip() -> None:
    frame = build_request(5, "add_flow", {"name": "x"}, key=("cid", 9))
    assert parse_request(frame) == (5, "add_flow", {"name": "x"}, ("cid", 9))
    assert parse_request(build_request(0, "ping", {})) == (0, "ping", {}, None)
    assert parse_request(_req(args=_DROP)) == (7, "ping", {}, None)  # args default to {}
    assert parse_request(_req(id=INT_MAX))[0] == INT_MAX
    assert parse_request(_req(key=["c" * 64, -3]))[3] == ("c" * 64, -3)


@pytest.mark.parametrize("frame", [
    b"", b"\xc1", b"\x81", b"garbage", pack([1, 2]), pack("ping"), pack(None), pack(3),
    pack({"v": 1, "id": 1, "op": "ping", "args": {}}) + b"\x00",  # trailing bytes
    msgpack.packb(msgpack.ExtType(1, b"x")), pack({"v": 1, "id": msgpack.ExtType(2, b"")}),
    b"\x91" * 10_000 + b"\xc0", b"\xdb\xff\xff\xff\xffabc", b"\xdd\xff\xff\xff\xff",
    b"\xdf\xff\xff\xff\xff", b"\xc6\x00\x00\x08\x00" + b"x" * 2048,
    b"\xa3\xed\xa0\x80",  # a lone surrogate in UTF-8
])
def test_undecodable_frames(frame: bytes) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_request(frame)
    assert type(err.value) is ProtocolError


def test_oversize_frame() -> None:
    with pytest.raises(TooLargeError):
        parse_request(b"\x00" * (MAX_REQUEST_BYTES + 1))


@pytest.mark.parametrize("rid", [-1, -(2**63), "1", 1.0, None, True, [1], _DROP])
def test_bad_request_id(rid: Any) -> None:
    with pytest.raises(ProtocolError, match="request id") as err:
        parse_request(_req(id=rid))
    assert err.value.data["request_id"] == (rid if type(rid) is int else None)


@pytest.mark.parametrize("fields,match", [
    ({"extra": 1}, "unknown request field"), ({"v": _DROP}, "protocol version"),
    ({"v": "1"}, "protocol version"), ({"v": None}, "protocol version"),
    ({"op": _DROP}, "'op'"), ({"op": 1}, "'op'"), ({"op": None}, "'op'"),
    ({"key": "cid"}, "'key'"), ({"key": ["cid"]}, "'key'"), ({"key": ["c", 1, 2]}, "'key'"),
    ({"key": [1, 1]}, "'key'"), ({"key": ["c", "1"]}, "'key'"), ({"key": ["c" * 65, 1]}, "'key'"),
    ({"key": ["c", True]}, "'key'"), ({"key": {"c": 1}}, "'key'"),
])
def test_bad_request_fields(fields: dict[str, Any], match: str) -> None:
    with pytest.raises(ProtocolError, match=match) as err:
        parse_request(_req(**fields))
    assert err.value.data["request_id"] == 7  # the error reply can still be matched


def test_unknown_op_and_bad_args_keep_request_id() -> None:
    with pytest.raises(UnknownOpError) as err:
        parse_request(_req(op="nope"))
    assert err.value.data["request_id"] == 7
    with pytest.raises(InvalidArgumentError) as err2:
        parse_request(_req(op="get_flow", args={"flow_id": 1}))
    assert err2.value.data["request_id"] == 7
    with pytest.raises(InvalidArgumentError):
        parse_request(_req(args=None))


@pytest.mark.parametrize("version", [0, 2, PROTOCOL_VERSION + 100, -1])
def test_wrong_version_names_both(version: int) -> None:
    with pytest.raises(UnsupportedVersionError) as err:
        parse_request(_req(v=version))
    msg = str(err.value)
    assert f"protocol {version}" in msg and f"speaks {PROTOCOL_VERSION}" in msg
    assert err.value.data["server"] == PROTOCOL_VERSION and err.value.data["client"] == version


def test_build_request_refuses_unpackable_args() -> None:
    for bad in (object(), 2**70, "\ud800"):
        with pytest.raises(InvalidArgumentError):
            build_request(1, "add_flow", {"name": bad})


# --------------------------------------------------------------- errors


def test_error_table_is_complete_and_one_to_one() -> None:
    classes = [c for c in vars(errors).values()
               if isinstance(c, type) and issubclass(c, FlowdError) and c is not FlowdError]
    assert {c.code for c in classes} == set(ERRORS)
    assert len(classes) == len(ERRORS)
    assert all(ERRORS[c.code] is c for c in classes)
    assert issubclass(InvalidArgumentError, ValueError)


@pytest.mark.parametrize("code", sorted(ERRORS))
def test_error_round_trip_every_code(code: str) -> None:
    cls = ERRORS[code]
    sent = cls(f"message for {code} ✓", {"flow_id": FID, "current_revision": 4})
    reply = unpack(protocol.reply_error(3, sent), protocol.MAX_REPLY_BYTES)
    assert reply["id"] == 3 and set(reply) == {"id", "error"}
    got = errors.error_from_wire(reply["error"])
    assert type(got) is cls and got.code == code
    assert got.message == sent.message and str(got) == sent.message
    assert got.data == {"flow_id": FID, "current_revision": 4}
    bare = errors.error_from_wire(unpack(protocol.reply_error(3, cls("m")))["error"])
    assert type(bare) is cls and bare.data == {}


def test_reply_error_strips_request_id() -> None:
    exc = ProtocolError("bad", {"request_id": 4})
    assert "data" not in unpack(protocol.reply_error(4, exc))["error"]
    exc2 = ConflictError("c", {"request_id": 4, "current_revision": 2})
    got = errors.error_from_wire(unpack(protocol.reply_error(4, exc2))["error"])
    assert isinstance(got, ConflictError) and got.data == {"current_revision": 2}
    assert got.current_revision == 2


def test_error_from_wire_tolerates_junk() -> None:
    unknown = errors.error_from_wire({"code": "NEW_CODE", "message": "m"})
    assert type(unknown) is FlowdError and unknown.code == "NEW_CODE"
    for junk in (None, "x", [1], 3):
        assert isinstance(errors.error_from_wire(junk), ProtocolError)
    odd = errors.error_from_wire({"code": 5, "message": None, "data": [1]})
    assert type(odd) is FlowdError and odd.data == {}
    assert errors.error_from_wire({"code": "COMPACTED"}).message == "COMPACTED"
    assert isinstance(errors.error_from_wire({"code": "COMPACTED"}), CompactedError)


def test_reply_ok_shapes() -> None:
    assert unpack(protocol.reply_ok(1, {"a": 1})) == {"id": 1, "result": {"a": 1}}
    assert unpack(protocol.reply_ok(1, None, 9)) == {"id": 1, "result": None, "rev": 9}
