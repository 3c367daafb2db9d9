"""Following the change feed without gaps: the ordering logic both clients share.

A watcher subscribes first, then reads history after its starting revision,
then takes live events. :class:`Sequencer` decides what to do with each
event: deliver it, drop it (already seen), or report a gap (fetch history to
fill it; if the history is compacted, the caller must resync).
"""

from __future__ import annotations

from typing import Any

from .model import Change, changes_of


class Sequencer:
    """Revision bookkeeping for one watcher: no gap, no duplicate."""

    def __init__(self, last: int) -> None:
        self.last = last

    def accept(self, event: dict[str, Any]) -> list[Change] | None:
        """Changes to deliver ([] if already seen), or None if there is a gap before it."""
        rev = event["revision"]
        if rev <= self.last:
            return []
        if rev != self.last + 1:
            return None
        self.last = rev
        return changes_of(event)

    def accept_history(self, changes: list[Change]) -> list[Change]:
        out = [c for c in changes if c.revision > self.last]
        if out:
            self.last = out[-1].revision
        return out
