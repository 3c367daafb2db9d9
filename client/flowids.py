"""Ids derived from a flow's content, for flows that arrive without one.

A legacy file's flow without an id gets ``flow_`` + 8 hex digits of a hash of
its content, so loading (or importing) the same file twice gives the same
ids: a second ``flowctl import`` finds the flows it added the first time and
changes nothing, and every dry run shows the same ids. The content is what
an import compares and keeps (name, plans and the other non-core keys, as
canonical JSON); ``created``/``updated``/``revision`` are left out, because
the loader fills missing timestamps with "now". Two flows with the same
content, or an id already taken, move on to the next candidate: the hash of
the content plus ``#1``, ``#2``, ... . Shared by the daemon's loader and
flowctl (pure, stdlib only).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

#: keys of a flow that are not its content
NOT_CONTENT = frozenset({"id", "created", "updated", "revision"})
#: candidates tried before giving up (each one a hash; only reached by a flood of equal flows)
MAX_CANDIDATES = 100_000


def content_bytes(flow: dict[str, Any]) -> bytes:
    content = {k: v for k, v in flow.items() if k not in NOT_CONTENT}
    return json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      default=str).encode()


def candidate(digest: Any, n: int) -> str:
    """The ``n``-th derived id for a content's sha256 ``digest`` object."""
    h = digest.copy()
    if n:
        h.update(b"#%d" % n)
    return "flow_" + h.hexdigest()[:8]


class Deriver:
    """Hands out derived ids. Equal contents continue where the previous one stopped, so
    a file of many equal flows costs one hash per flow, not one per flow and candidate."""

    def __init__(self) -> None:
        self._next: dict[bytes, int] = {}

    def derive(self, flow: dict[str, Any], usable: Callable[[str], bool]) -> str:
        """The first candidate id of ``flow`` (from where equal contents stopped) that is
        ``usable``."""
        digest = hashlib.sha256(content_bytes(flow))
        key = digest.digest()
        n = self._next.get(key, 0)
        while n < MAX_CANDIDATES:
            fid = candidate(digest, n)
            n += 1
            if usable(fid):
                self._next[key] = n
                return fid
        raise ValueError(f"no usable derived id among {MAX_CANDIDATES} candidates")
