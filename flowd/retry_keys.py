"""Retry keys: the first reply of every recent write, for idempotent retries.

Bounded by count and by bytes: a result is kept packed (msgpack), so what it
costs is its length, exactly, and it pins no version of a flow the store has
moved past. A retried write older than the window is applied again (the window
is documented in the README).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from flowd_client import protocol

from .history import MiB, unpack_kept

#: what a key costs besides its packed reply (tuples, dict slot, the bytes object's
#: header; an error reply's exception object), counted in the bound
KEY_OVERHEAD = 320
ERROR_BYTES = 512


class RetryKeys:
    """Idempotency keys of recent writes and their first replies (LRU, bounded).

    A reply is kept whole (ok, result or error, revision), so a retry gets the
    very reply the first attempt got, even after other writes. A result is kept
    packed: the window is bounded by count and by bytes, exactly, and a kept
    reply pins no old version of a flow.
    """

    def __init__(self, size: int = 100_000, max_bytes: int = 32 * MiB) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0
        self.replies: OrderedDict[tuple[str, int], tuple[bool, Any, int | None, int]] = (
            OrderedDict())

    def get(self, key: tuple[str, int]) -> tuple[bool, Any, int | None] | None:
        got = self.replies.get(key)
        if got is None:
            return None
        ok, value, rev, _ = got
        return ok, unpack_kept(value) if ok else value, rev

    def put(self, key: tuple[str, int], ok: bool, value: Any, rev: int | None = None) -> None:
        if ok:
            value = protocol.pack(value)
        size = len(value) + KEY_OVERHEAD if ok else ERROR_BYTES
        old = self.replies.pop(key, None)
        if old is not None:
            self.bytes -= old[3]
        self.replies[key] = (ok, value, rev, size)
        self.bytes += size
        while self.replies and (len(self.replies) > self.size or self.bytes > self.max_bytes):
            self.bytes -= self.replies.popitem(last=False)[1][3]
