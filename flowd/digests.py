"""What makes two copies of a flow "the same" for a stray merge: a content digest.

The old tools keep only ``id, name, plans, created, updated`` and rewrite the
file with ``json.dump(indent=2)``: formatting, ``revision`` and unknown keys
are gone, everything else survives a JSON round trip unchanged. So a flow's
digest is taken over its parsed values, never over bytes, and never over
``revision`` (the daemon's own number). A flow with keys beyond those has two:
one over everything but ``revision`` and one over the five core keys, so that
an old tool's copy (which dropped the extras) still matches it, while a newer
tool that keeps extras and edits only one of them is still seen as an edit.

A digest is an ``int`` (64 bits of BLAKE2b) or, for a flow with extra keys,
the pair ``(full, core)``. 64 bits: only copies of the same id are ever
compared, so a false "unchanged" needs a 2^-64 accident on one flow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

CORE_KEYS = ("id", "name", "plans", "created", "updated")
KNOWN_KEYS = frozenset((*CORE_KEYS, "revision"))
#: how many keys a flow with nothing beyond the schema has (with or without revision)
_PLAIN_SIZES = (5, 6)

Digest = int | tuple[int, int]


def _h(value: Any) -> int:
    data = orjson.dumps(value)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def digest(flow: Mapping[str, Any]) -> Digest:
    """The digest of one flow (a store flow or a parsed one; ``revision`` ignored)."""
    get = flow.get
    core = (get("id"), get("name"), get("plans"), get("created"), get("updated"))
    if len(flow) in _PLAIN_SIZES and (len(flow) == 5 or "revision" in flow):
        return _h(core)
    extras = [[k, v] for k, v in flow.items() if k not in KNOWN_KEYS]
    if not extras:
        return _h(core)
    return (_h([core, extras]), _h(core))


def core_of(d: Digest) -> int:
    return d[1] if type(d) is tuple else d  # type: ignore[return-value]


def same(a: Digest | None, b: Digest | None) -> bool:
    """Two copies hold the same flow: equal, or equal in the core keys where one of
    them has no extras (an old tool dropped them; that is no edit)."""
    if a == b:
        return True
    if a is None or b is None:
        return False
    if type(a) is tuple and type(b) is tuple:
        return False
    return core_of(a) == core_of(b)
