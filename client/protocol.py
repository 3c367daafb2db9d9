"""The wire protocol: the op table, message shapes, limits, and the codec.

Pure (stdlib + msgpack): the daemon imports this module, never the reverse.
A request is one msgpack map ``{"v", "id", "op", "args"[, "key"]}``; a reply
is ``{"id", "result"}`` or ``{"id", "error": {"code", "message"[, "data"]}}``;
a change event is published as ``[EVENT_TOPIC, event]`` (see :func:`build_event`).
Every field of a request is checked here so that the daemon's store only ever
sees values that flows.json can hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgpack

from . import values as v
from .errors import (
    FlowdError,
    InvalidArgumentError,
    ProtocolError,
    TooLargeError,
    UnknownOpError,
    UnsupportedVersionError,
    error_to_wire,
)
from .values import FLOW_CORE_KEYS as FLOW_CORE_KEYS
from .values import INT_MAX as INT_MAX
from .values import INT_MIN as INT_MIN
from .values import MAX_DEPTH as MAX_DEPTH
from .values import MAX_ID_CHARS as MAX_ID_CHARS
from .values import MAX_NAME_CHARS as MAX_NAME_CHARS
from .values import MAX_PAGE as MAX_PAGE
from .values import MAX_STRING_BYTES as MAX_STRING_BYTES
from .values import Check
from .values import check_value as check_value

PROTOCOL_VERSION = 1
#: Default of the largest request the daemon accepts (``--max-request-bytes``); a
#: daemon reports its configured limit in ``hello`` and clients check against that.
MAX_REQUEST_BYTES = 16 * 1024 * 1024
#: The smallest limit a daemon can be configured with: frames up to this size need
#: no hello to know they fit.
MIN_REQUEST_LIMIT = 1024
#: Largest reply a client accepts (a page of get_all_flows stays well under it).
MAX_REPLY_BYTES = 512 * 1024 * 1024
MAX_BATCH_OPS = 1000
DEFAULT_PAGE = 5000
#: A page of get_all_flows asked for with ``json`` carries its flows under this key as
#: one binary value: a JSON object of id to flow, in order (the lines of flows.json
#: as the daemon holds them, joined: it decodes none of them; the client does, in C).
PAGE_JSON = "flows_json"


# --------------------------------------------------------------- the op table

Args = dict[str, tuple[Check, bool]]


@dataclass(frozen=True)
class Op:
    """One op, everything each side derives from: adding an op is one entry here plus
    its handler in the daemon (and, if it deserves one, a named client method).

    ``kind``: a ``read`` is answered at once, a ``write`` is journaled before its
    reply, a ``check`` exists only inside a batch. ``handler``: ``ops.<function>``
    in ``flowd/ops.py`` (the op needs only the store) or ``handler.<method>`` of
    the daemon's RequestHandler (it needs the daemon's own state).
    ``args``: argument -> (check, required); anything not listed is refused.
    ``in_batch``: the op may be one operation of a ``batch``.
    """

    kind: Literal["read", "write", "check"]
    handler: str
    args: Args
    in_batch: bool = False

    @property
    def write(self) -> bool:
        return self.kind != "read"


_ID = v.of_type(str)
_OPT_ID = v.of_type(str, none=True)
_PLAN_ID = v.of_type(str, int, none=True)
_INT = v.of_type(int)
_IF_REV = (v.revision, False)


def _read(handler: str, args: Args) -> Op:
    return Op("read", handler, args)


def _edit(handler: str, args: Args) -> Op:
    """A write that may also be one operation of a batch."""
    return Op("write", handler, args, in_batch=True)


def _ops(name: str, value: Any) -> None:
    if type(value) is not list or not value:
        raise InvalidArgumentError(f"{name} must be a non-empty list of operations")
    if len(value) > MAX_BATCH_OPS:
        raise TooLargeError(f"a batch holds at most {MAX_BATCH_OPS} operations")
    for i, item in enumerate(value):
        if type(item) is not dict or set(item) - {"op", "args"} or "op" not in item:
            raise InvalidArgumentError(f"{name}[{i}] must be a map with 'op' and 'args'")
        op, args = item["op"], item.get("args", {})
        if type(op) is not str or op not in BATCH_OPS:
            raise InvalidArgumentError(f"{name}[{i}]: {op!r} cannot be used in a batch")
        try:
            check_args(op, args)
        except FlowdError as exc:
            exc.message = f"{name}[{i}] ({op}): {exc.message}"
            exc.args = (exc.message,)
            raise


OPS: dict[str, Op] = {
    "hello": _read("handler.hello", {"version": (_INT, True),
                                     "client": (v.of_type(str, none=True), False)}),
    "ping": _read("handler.ping", {}),
    "get_flow": _read("ops.get_flow", {"flow_id": (_ID, True)}),
    "get_all_flows": _read("handler.page", {"limit": (v.limit, False),
                                            "cursor": (_OPT_ID, False),
                                            "json": (v.of_type(bool), False)}),
    "get_current": _read("ops.get_current", {}),
    "find_by_name": _read("ops.find_by_name", {"name": (v.flow_name, True)}),
    "stats": _read("handler.collect_stats", {}),
    "history": _read("handler.history_since", {"since": (v.since, True)}),
    "add_flow": _edit("ops.add_flow", {"name": (v.flow_name, True), "plans": (v.plans, False),
                                       "flow_id": (v.flow_id, False),
                                       "extra": (v.extra, False)}),
    "update_flow": _edit("ops.update_flow", {
        "flow_id": (_ID, True), "name": (v.opt_name, False), "plans": (v.plans, False),
        "extra": (v.extra, False), "if_revision": _IF_REV}),
    "delete_flow": _edit("ops.delete_flow", {"flow_id": (_ID, True), "if_revision": _IF_REV}),
    "set_current": _edit("ops.set_current", {"flow_id": (_ID, True)}),
    "append_plan": _edit("ops.append_plan", {"flow_id": (_ID, True), "plan": (v.plan, True),
                                             "if_revision": _IF_REV}),
    "update_plan": _edit("ops.update_plan", {
        "flow_id": (_ID, True), "plan": (v.plan, True), "index": (v.index, False),
        "plan_id": (_PLAN_ID, False), "if_revision": _IF_REV}),
    "remove_plan": _edit("ops.remove_plan", {
        "flow_id": (_ID, True), "index": (v.index, False), "plan_id": (_PLAN_ID, False),
        "if_revision": _IF_REV}),
    "move_plan": _edit("ops.move_plan", {"flow_id": (_ID, True), "src": (_INT, True),
                                         "dst": (_INT, True), "if_revision": _IF_REV}),
    "check": Op("check", "ops.check", {"flow_id": (_ID, True),
                                       "revision": (v.of_type(int, none=True), True)},
                in_batch=True),
    "batch": Op("write", "ops.batch", {"ops": (_ops, True)}),
    "save": Op("write", "handler.save", {"force": (v.of_type(bool), False)}),
}

#: op -> {arg: (check, required)}, as the table says
ARGS: dict[str, Args] = {name: op.args for name, op in OPS.items()}
READ_OPS = frozenset(name for name, op in OPS.items() if op.kind == "read")
WRITE_OPS = frozenset(name for name, op in OPS.items() if op.kind == "write")
#: Ops a batch may hold, with ``check`` (a precondition that writes nothing).
BATCH_OPS = frozenset(name for name, op in OPS.items() if op.in_batch)


def is_write(op: str) -> bool:
    """A write carries an idempotency key and is journaled before its reply."""
    return OPS[op].write


def check_args(op: str, args: Any) -> None:
    """Type-check ``args`` for ``op``: unknown, missing and ill-typed fields are refused."""
    spec = ARGS.get(op) if type(op) is str else None
    if spec is None:
        raise UnknownOpError(f"unknown op {op!r}")
    if type(args) is not dict:
        raise InvalidArgumentError(f"{op}: args must be a map")
    unknown = set(args) - set(spec)
    if unknown:
        raise InvalidArgumentError(f"{op}: unknown argument(s) {sorted(map(str, unknown))}")
    for name, (check, required) in spec.items():
        if name in args:
            check(name, args[name])
        elif required:
            raise InvalidArgumentError(f"{op}: missing argument {name!r}")


# --------------------------------------------------------------- codec


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ProtocolError(f"msgpack extension type {code} is not allowed")


def unpack(frame: bytes, max_bytes: int = MAX_REQUEST_BYTES, max_bin: int = 1024) -> Any:
    """Decode one msgpack message with hard limits; raises ProtocolError/TooLargeError.
    ``max_bin``: the longest binary value (a request has small ones only; a reply may
    carry a page of flows as JSON text, :data:`PAGE_JSON`)."""
    if len(frame) > max_bytes:
        raise TooLargeError(f"message of {len(frame)} bytes exceeds {max_bytes}")
    try:
        return msgpack.unpackb(
            frame, raw=False, strict_map_key=False, use_list=True, ext_hook=_refuse_ext,
            max_bin_len=max_bin, max_str_len=max_bytes, max_array_len=max_bytes,
            max_map_len=max_bytes, max_ext_len=0,
        )
    except FlowdError:
        raise
    except Exception as exc:  # msgpack raises a zoo of types for bad input
        raise ProtocolError(f"undecodable message: {type(exc).__name__}: {exc}") from None


def socket_limit(max_request_bytes: int) -> int:
    """ZMQ_MAXMSGSIZE for a daemon with this request limit: a bit above it, so that a
    modestly oversized request still reaches :func:`parse_request` and gets a TOO_LARGE
    reply, while a huge frame is dropped by ZeroMQ before it is buffered whole."""
    return max_request_bytes + max(64 * 1024, max_request_bytes // 8)


def peek_request_id(frame: bytes) -> int | None:
    """The ``id`` of a request too large to decode, read from its first bytes only.

    Requests put ``v`` and ``id`` before ``args`` (see :func:`build_request`), so
    the reply to an oversized request can still be matched by the client.
    """
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=256, max_str_len=16,
                                max_bin_len=0, max_array_len=0, max_map_len=16, max_ext_len=0)
    unpacker.feed(frame[:256])
    try:
        for _ in range(unpacker.read_map_header()):
            key, value = unpacker.unpack(), unpacker.unpack()
            if key == "id":
                return value if type(value) is int and 0 <= value <= INT_MAX else None
    except Exception:  # anything but a well-formed small prefix: no id to answer
        return None
    return None


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


class Packed(bytes):
    """A value already in msgpack form; :func:`reply_ok` puts it in as is. The daemon
    builds big replies from parts it packed anyway (to count their bytes)."""


def _header(n: int, small: int, big16: int) -> bytes:
    if n < 16:
        return bytes([small | n])
    if n < 1 << 16:
        return bytes([big16]) + n.to_bytes(2, "big")
    return bytes([big16 + 1]) + n.to_bytes(4, "big")


def packed_array(items: list[bytes]) -> Packed:
    """A msgpack array of already packed items."""
    return Packed(_header(len(items), 0x90, 0xDC) + b"".join(items))


def packed_map(items: dict[str, bytes]) -> Packed:
    """A msgpack map of string keys to already packed values."""
    return Packed(_header(len(items), 0x80, 0xDE)
                  + b"".join(pack(k) + v for k, v in items.items()))


REQUEST_KEYS = frozenset({"v", "id", "op", "args", "key"})


def parse_request(frame: bytes, max_bytes: int = MAX_REQUEST_BYTES,
                  ) -> tuple[Any, str, dict[str, Any], tuple[str, int] | None]:
    """Decode and check a request; returns (id, op, args, idempotency key).

    Raises FlowdError with ``request_id`` set in ``data`` when the id could be read,
    so that the error reply can still be matched by the client. ``max_bytes`` is
    the daemon's configured limit; a bigger frame gets TOO_LARGE.
    """
    if len(frame) > max_bytes:
        raise TooLargeError(f"request of {len(frame)} bytes exceeds the daemon's limit of "
                            f"{max_bytes} bytes (--max-request-bytes)",
                            {"request_id": peek_request_id(frame), "limit": max_bytes,
                             "size": len(frame)})
    msg = unpack(frame, max_bytes)
    if type(msg) is not dict:
        raise ProtocolError("a request must be a map")
    rid = msg.get("id")
    try:
        if type(rid) is not int or not 0 <= rid <= INT_MAX:
            raise ProtocolError("request id must be a non-negative integer")
        unknown = set(msg) - REQUEST_KEYS
        if unknown:
            raise ProtocolError(f"unknown request field(s) {sorted(map(str, unknown))}")
        version = msg.get("v")
        if type(version) is not int:
            raise ProtocolError("request field 'v' (protocol version) must be an integer")
        if version != PROTOCOL_VERSION:
            raise UnsupportedVersionError(
                f"client speaks protocol {version}, this daemon speaks {PROTOCOL_VERSION}",
                {"server": PROTOCOL_VERSION, "client": version})
        op, args = msg.get("op"), msg.get("args", {})
        if type(op) is not str:
            raise ProtocolError("request field 'op' must be a string")
        if op not in READ_OPS and op not in WRITE_OPS:
            raise UnknownOpError(f"unknown op {op!r}" + (" (it exists only inside a batch)"
                                                           if op in BATCH_OPS else ""))
        check_args(op, args)
        key = msg.get("key")
        if key is not None:
            if (type(key) is not list or len(key) != 2 or type(key[0]) is not str
                    or len(key[0]) > 64 or type(key[1]) is not int):
                raise ProtocolError("request field 'key' must be [client id, sequence]")
            key = (key[0], key[1])
        return rid, op, args, key
    except FlowdError as exc:
        exc.data.setdefault("request_id", rid if type(rid) is int else None)
        raise


def build_request(rid: int, op: str, args: dict[str, Any],
                  key: tuple[str, int] | None = None) -> bytes:
    msg: dict[str, Any] = {"v": PROTOCOL_VERSION, "id": rid, "op": op, "args": args}
    if key is not None:
        msg["key"] = list(key)
    try:
        return pack(msg)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidArgumentError(f"{op}: arguments cannot be sent: {exc}") from None


def hello_request(rid: int) -> bytes:
    """The hello a client sends on a new connection to learn the daemon's limits."""
    return build_request(rid, "hello", {"version": PROTOCOL_VERSION, "client": "flowd_client"})


def reply_ok(rid: Any, result: Any, rev: int | None = None) -> bytes:
    """A success reply; writes carry ``rev``, the store revision that holds them."""
    if type(result) is Packed:
        fields = {"id": pack(rid), "result": result}
        if rev is not None:
            fields["rev"] = pack(rev)
        return bytes(packed_map(fields))
    if rev is None:
        return pack({"id": rid, "result": result})
    return pack({"id": rid, "result": result, "rev": rev})


def reply_error(rid: Any, exc: FlowdError) -> bytes:
    err = error_to_wire(exc)
    if "data" in err:
        err["data"] = {k: v for k, v in err["data"].items() if k != "request_id"} or None
        if err["data"] is None:
            del err["data"]
    return pack({"id": rid, "error": err})


# --------------------------------------------------------------- change events

#: The PUB topic of change events. A padding sent in front of a big event goes
#: under EVENT_PAD_TOPIC; a subscriber to EVENT_TOPIC (a prefix) receives it and
#: drops it, since it is one frame, not two.
EVENT_TOPIC = b"rev"
EVENT_PAD_TOPIC = b"rev-pad"


def build_event(revision: int, ts: str, current_flow_id: str | None,
                changes: list[tuple[str, str, Any]],
                merge: dict[str, Any] | None = None) -> dict[str, Any]:
    """One published revision: ``{"revision", "ts", "current_flow_id", "changes":
    [{"op", "flow_id", "flow"}, ...][, "merge"]}``; ``flow`` is None for a delete.
    A batch is one event with several changes; a stray merge carries its report."""
    event: dict[str, Any] = {
        "revision": revision, "ts": ts, "current_flow_id": current_flow_id,
        "changes": [{"op": op, "flow_id": fid, "flow": flow} for op, fid, flow in changes]}
    if merge is not None:
        event["merge"] = merge
    return event


def event_frames(packed_event: bytes) -> list[bytes]:
    """The PUB frames of an event already packed (the daemon packs each event once)."""
    return [EVENT_TOPIC, packed_event]


def decode_event(frames: list[bytes]) -> dict[str, Any] | None:
    """The event in a feed message; None for anything else (a padding, a stray frame)."""
    if len(frames) != 2 or frames[0] != EVENT_TOPIC:
        return None
    event = unpack(frames[1], MAX_REPLY_BYTES)
    return event if isinstance(event, dict) and "revision" in event else None
