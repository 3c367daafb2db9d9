"""What a group commit holds for its requests until the group is durable.

The request handler stages each write (and each refusal computed against staged
writes, issue 16) as a PendingWrite; the replies go out, in order, only once the
backend made the group durable, or are answered UNAVAILABLE if it could not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flowd_client.errors import FlowdError

#: a peer's ROUTER envelope: its identity, plus the empty delimiter of a REQ socket
Envelope = tuple[bytes, ...]
#: replies ready to go out, each to its envelope
Out = list[tuple[Envelope, bytes]]

@dataclass
class PendingWrite:
    client: Envelope
    rid: int
    key: tuple[str, int] | None
    record: dict[str, Any] | None
    result: Any
    followers: list[tuple[Envelope, int]]
    #: a refusal that depends on staged writes: sent only once they are durable
    error: FlowdError | None = None
    #: the request itself, to compute it again over a store that caught up
    op: str = ""
    args: dict[str, Any] | None = None
