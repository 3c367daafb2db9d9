"""The request path of both clients, without sockets (sans-IO).

What a request is and how its reply is judged lives here once; the sync
transport (:mod:`flowd_client.connection`) and the async one
(:mod:`flowd_client.aio`) only move frames and wait. The core builds frames
(fresh id; a write gets an idempotency key that stays the same across its
retries), refuses a request over the daemon's limit before it is sent
(TooLargeError at once, not a timeout), matches replies to requests by id (an
id-less error answers a request the daemon could not read: it goes to the
oldest one waiting), splits one deadline over the attempts, and turns error
replies into exceptions.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Collection, Generator
from dataclasses import dataclass
from typing import Any, NamedTuple

from . import protocol
from .errors import ProtocolError, TooLargeError, error_from_wire


def limit_of(hello: Any) -> int:
    """The request limit a hello reply reports (the protocol default if it says none)."""
    value = hello.get("max_request_bytes") if isinstance(hello, dict) else None
    return value if type(value) is int and value > 0 else protocol.MAX_REQUEST_BYTES


def check_size(op: str, size: int, limit: int) -> None:
    """Refuse locally what the daemon would refuse: no round trip, a clear error."""
    if size > limit:
        raise TooLargeError(f"{op}: request of {size} bytes exceeds the daemon's limit of "
                            f"{limit} bytes (--max-request-bytes)", {"limit": limit, "size": size})


class Call(NamedTuple):
    """One request a generator of calls (the API, a follower) wants made."""

    op: str
    args: dict[str, Any]

    @property
    def write(self) -> bool:
        """As the op table says: a write gets an idempotency key."""
        return protocol.is_write(self.op)


#: a generator of calls: it yields each Call and is sent back its result
Steps = Generator[Call, Any, Any]


@dataclass(slots=True)
class Request:
    """One request on its way: its frame, and the one deadline all its attempts share."""

    rid: int
    op: str
    frame: bytes
    deadline: float
    timeout: float


class RequestCore:
    """Ids, keys, the daemon's limit and the retry budget of one client connection."""

    def __init__(self, timeout: float = 5.0, retries: int = 2) -> None:
        self.timeout = timeout
        self.retries = retries
        self.reset()

    def reset(self) -> None:
        """A new identity (a forked child must not reuse its parent's keys)."""
        self.client_id = secrets.token_hex(8)
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        #: the daemon's request limit, from hello on the current connection
        self.limit: int | None = None

    # ------------------------------------------------------------ requests

    def request(self, op: str, args: dict[str, Any], write: bool,
                timeout: float | None = None) -> Request:
        timeout = self.timeout if timeout is None else timeout
        key = (self.client_id, next(self._seq)) if write else None
        rid = next(self._ids)
        frame = protocol.build_request(rid, op, args, key)
        return Request(rid, op, frame, time.monotonic() + timeout, timeout)

    def needs_limit(self, req: Request) -> bool:
        """The frame may be over the daemon's limit, which is not known yet: ask hello
        first (:meth:`hello`, then :meth:`learn_limit`)."""
        return len(req.frame) > protocol.MIN_REQUEST_LIMIT and self.limit is None

    def hello(self, req: Request) -> Request:
        """The hello that learns the limit, within ``req``'s deadline."""
        rid = next(self._ids)
        return Request(rid, "hello", protocol.hello_request(rid), req.deadline, req.timeout)

    def learn_limit(self, hello_result: Any) -> None:
        self.limit = limit_of(hello_result)

    def check_size(self, req: Request) -> None:
        """TooLargeError if the daemon would refuse the frame (call after its hello)."""
        if len(req.frame) > protocol.MIN_REQUEST_LIMIT:
            check_size(req.op, len(req.frame), self.limit or protocol.MAX_REQUEST_BYTES)

    def forget_limit(self) -> None:
        """The next connection may reach a restarted daemon with another limit."""
        self.limit = None

    # ------------------------------------------------------------ attempts

    def attempts(self) -> range:
        return range(self.retries + 1)

    def wait_until(self, req: Request, attempt: int) -> float:
        """When attempt ``attempt`` gives up: what is left of the deadline, split evenly
        over the attempts still to come."""
        now = time.monotonic()
        return now + max(req.deadline - now, 0.0) / (self.retries + 1 - attempt)

    @staticmethod
    def expired(req: Request) -> bool:
        return time.monotonic() >= req.deadline

    # ------------------------------------------------------------ replies

    @staticmethod
    def decode(frame: bytes) -> dict[str, Any]:
        msg = protocol.unpack(frame, protocol.MAX_REPLY_BYTES, protocol.MAX_REPLY_BYTES)
        if not isinstance(msg, dict):
            raise ProtocolError("reply is not a map")
        return msg

    @staticmethod
    def match(msg: dict[str, Any], waiting: Collection[int]) -> int | None:
        """The request ``msg`` answers among those ``waiting``, or None (a late reply to
        an abandoned attempt, a padding): an id-less error answers a request the daemon
        could not decode, so it goes to the oldest one waiting."""
        rid = msg.get("id")
        if type(rid) is int and rid in waiting:
            return rid
        if rid is None and "error" in msg and waiting:
            return min(waiting)
        return None

    @staticmethod
    def outcome(msg: dict[str, Any]) -> tuple[Any, int | None]:
        """(result, revision of a write), or the error the reply stands for."""
        if "error" in msg:
            raise error_from_wire(msg["error"])
        return msg.get("result"), msg.get("rev")
