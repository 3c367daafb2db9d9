"""The wire protocol: message shapes, op names, limits, and the codec.

Pure (stdlib + msgpack): the daemon imports this module, never the reverse.
A request is one msgpack map ``{"v", "id", "op", "args"[, "key"]}``; a reply
is ``{"id", "result"}`` or ``{"id", "error": {"code", "message"[, "data"]}}``.
Every field of a request is checked here so that the daemon's store only ever
sees values that flows.json can hold.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import msgpack

from .errors import (
    FlowdError,
    InvalidArgumentError,
    ProtocolError,
    TooLargeError,
    UnknownOpError,
    UnsupportedVersionError,
    error_to_wire,
)

PROTOCOL_VERSION = 1
#: Default of the largest request the daemon accepts (``--max-request-bytes``); a
#: daemon reports its configured limit in ``hello`` and clients check against that.
MAX_REQUEST_BYTES = 16 * 1024 * 1024
#: The smallest limit a daemon can be configured with: frames up to this size need
#: no hello to know they fit.
MIN_REQUEST_LIMIT = 1024
#: Largest reply a client accepts (a page of get_all_flows stays well under it).
MAX_REPLY_BYTES = 512 * 1024 * 1024
#: Deepest nesting of a value inside a plan or flow (flows.json adds 4 levels).
MAX_DEPTH = 64
MAX_STRING_BYTES = 1024 * 1024
MAX_NAME_CHARS = 4096
MAX_ID_CHARS = 128
#: keys of a flow that only the daemon's own arguments set
FLOW_CORE_KEYS = ("id", "name", "plans", "created", "updated", "revision")
MAX_BATCH_OPS = 1000
DEFAULT_PAGE = 5000
MAX_PAGE = 100_000
INT_MIN, INT_MAX = -(2**63), 2**64 - 1

READ_OPS = frozenset(
    {"hello", "ping", "get_flow", "get_all_flows", "get_current", "find_by_name",
     "stats", "history"}
)
WRITE_OPS = frozenset(
    {"add_flow", "update_flow", "delete_flow", "set_current", "append_plan",
     "update_plan", "remove_plan", "move_plan", "batch", "save"}
)
#: Ops a batch may hold, plus ``check`` (a precondition that writes nothing).
BATCH_OPS = frozenset(WRITE_OPS - {"batch", "save"}) | {"check"}


# --------------------------------------------------------------- values


def check_value(value: Any, what: str = "value") -> None:
    """Refuse anything flows.json cannot hold exactly (bytes, NaN, huge ints...).

    Iterative, so a hostile depth cannot exhaust the Python stack.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if v is None or v is True or v is False:
            continue
        t = type(v)
        if t is str:
            if len(v) > MAX_STRING_BYTES:
                raise TooLargeError(f"{what}: string longer than {MAX_STRING_BYTES}")
        elif t is int:
            if not INT_MIN <= v <= INT_MAX:
                raise InvalidArgumentError(f"{what}: integer {v} does not fit in 64 bits")
        elif t is float:
            if not math.isfinite(v):
                raise InvalidArgumentError(f"{what}: {v} is not a finite number")
        elif t is list:
            if depth >= MAX_DEPTH:
                raise InvalidArgumentError(f"{what}: nested deeper than {MAX_DEPTH}")
            stack.extend((x, depth + 1) for x in v)
        elif t is dict:
            if depth >= MAX_DEPTH:
                raise InvalidArgumentError(f"{what}: nested deeper than {MAX_DEPTH}")
            for k, x in v.items():
                if type(k) is not str:
                    raise InvalidArgumentError(f"{what}: map key {k!r} is not a string")
                stack.append((x, depth + 1))
        else:
            raise InvalidArgumentError(f"{what}: {t.__name__} cannot be stored in flows.json")


# --------------------------------------------------------------- arguments

Check = Callable[[str, Any], None]


def _type(*types: type, none: bool = False) -> Check:
    names = "/".join(t.__name__ for t in types) + (" or null" if none else "")

    def check(name: str, v: Any) -> None:
        if v is None and none:
            return
        if type(v) not in types:
            raise InvalidArgumentError(f"{name} must be {names}, not {type(v).__name__}")
    return check


def _name(name: str, v: Any) -> None:
    if type(v) is not str:
        raise InvalidArgumentError(f"{name} must be str, not {type(v).__name__}")
    if len(v) > MAX_NAME_CHARS:
        raise TooLargeError(f"{name} is longer than {MAX_NAME_CHARS} characters")


def _opt_name(name: str, v: Any) -> None:
    if v is not None:
        _name(name, v)


def _revision(name: str, v: Any) -> None:
    if v is not None and (type(v) is not int or v < 0 or v > INT_MAX):
        raise InvalidArgumentError(f"{name} must be a non-negative integer or null")


def _plan(name: str, v: Any) -> None:
    if type(v) is not dict:
        raise InvalidArgumentError(f"{name} must be a map, not {type(v).__name__}")
    check_value(v, name)


def _plans(name: str, v: Any) -> None:
    if v is None:
        return
    if type(v) is not list:
        raise InvalidArgumentError(f"{name} must be a list of maps, not {type(v).__name__}")
    for i, p in enumerate(v):
        _plan(f"{name}[{i}]", p)


def _index(name: str, v: Any) -> None:
    if v is not None and type(v) is not int:
        raise InvalidArgumentError(f"{name} must be an integer or null")


def _since(name: str, v: Any) -> None:
    if type(v) is not int or not 0 <= v <= INT_MAX:
        raise InvalidArgumentError(f"{name} must be a non-negative integer")


def _flow_id(name: str, v: Any) -> None:
    if v is None:
        return
    if type(v) is not str or not 1 <= len(v) <= MAX_ID_CHARS:
        raise InvalidArgumentError(f"{name} must be a string of 1..{MAX_ID_CHARS} characters")


def _extra(name: str, v: Any) -> None:
    """Keys a newer tool keeps in a flow; the daemon's own keys cannot be set this way."""
    if v is None:
        return
    if type(v) is not dict:
        raise InvalidArgumentError(f"{name} must be a map")
    core = set(v) & set(FLOW_CORE_KEYS)
    if core:
        raise InvalidArgumentError(f"{name} cannot set {sorted(core)}: use the arguments")
    check_value(v, name)


def _limit(name: str, v: Any) -> None:
    if v is not None and (type(v) is not int or not 1 <= v <= MAX_PAGE):
        raise InvalidArgumentError(f"{name} must be an integer in 1..{MAX_PAGE}")


def _ops(name: str, v: Any) -> None:
    if type(v) is not list or not v:
        raise InvalidArgumentError(f"{name} must be a non-empty list of operations")
    if len(v) > MAX_BATCH_OPS:
        raise TooLargeError(f"a batch holds at most {MAX_BATCH_OPS} operations")
    for i, item in enumerate(v):
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


_ID = _type(str)
_OPT_ID = _type(str, none=True)
_BOOL = _type(bool)
_OPT_INT = _type(int, none=True)
_PLAN_ID = _type(str, int, none=True)
_IF_REV = (_revision, False)

#: op -> {arg: (check, required)}; anything not listed is refused.
ARGS: dict[str, dict[str, tuple[Check, bool]]] = {
    "hello": {"version": (_type(int), True), "client": (_type(str, none=True), False)},
    "ping": {},
    "get_flow": {"flow_id": (_ID, True)},
    "get_all_flows": {"limit": (_limit, False), "cursor": (_OPT_ID, False)},
    "get_current": {},
    "find_by_name": {"name": (_name, True)},
    "stats": {},
    "history": {"since": (_since, True)},
    "add_flow": {"name": (_name, True), "plans": (_plans, False), "flow_id": (_flow_id, False),
                 "extra": (_extra, False)},
    "update_flow": {"flow_id": (_ID, True), "name": (_opt_name, False),
                    "plans": (_plans, False), "extra": (_extra, False), "if_revision": _IF_REV},
    "delete_flow": {"flow_id": (_ID, True), "if_revision": _IF_REV},
    "set_current": {"flow_id": (_ID, True)},
    "append_plan": {"flow_id": (_ID, True), "plan": (_plan, True), "if_revision": _IF_REV},
    "update_plan": {"flow_id": (_ID, True), "plan": (_plan, True), "index": (_index, False),
                    "plan_id": (_PLAN_ID, False), "if_revision": _IF_REV},
    "remove_plan": {"flow_id": (_ID, True), "index": (_index, False),
                    "plan_id": (_PLAN_ID, False), "if_revision": _IF_REV},
    "move_plan": {"flow_id": (_ID, True), "src": (_type(int), True), "dst": (_type(int), True),
                  "if_revision": _IF_REV},
    "check": {"flow_id": (_ID, True), "revision": (_OPT_INT, True)},
    "batch": {"ops": (_ops, True)},
    "save": {"force": (_BOOL, False)},
}
assert set(ARGS) == READ_OPS | WRITE_OPS | {"check"}


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


def unpack(frame: bytes, max_bytes: int = MAX_REQUEST_BYTES) -> Any:
    """Decode one msgpack message with hard limits; raises ProtocolError/TooLargeError."""
    if len(frame) > max_bytes:
        raise TooLargeError(f"message of {len(frame)} bytes exceeds {max_bytes}")
    try:
        return msgpack.unpackb(
            frame, raw=False, strict_map_key=False, use_list=True, ext_hook=_refuse_ext,
            max_bin_len=1024, max_str_len=max_bytes, max_array_len=max_bytes,
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
