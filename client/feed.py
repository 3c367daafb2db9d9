"""Following the change feed without gaps, written once for every follower.

A watcher subscribes first, then reads history after its starting revision,
then takes live events. :class:`Sequencer` decides what to do with each
event: deliver it, drop it (already seen), or report a gap (fetch history to
fill it; if the history is compacted, the caller must resync).

:func:`follow` is the follow loop itself, without sockets: a generator of
actions (wait for the feed, catch up from history, deliver changes). The sync
watch, the async watch and the cached client's mirror each drive it with their
own socket and their own way of asking for history.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from typing import Any, NamedTuple

from .model import Change, changes_of
from .protocol import decode_event

#: a follower reads history at least this often (an event may beat the subscription)
IDLE_CHECK = 1.0


class Sequencer:
    """Revision bookkeeping for one watcher: no gap, no duplicate."""

    def __init__(self, last: int) -> None:
        self.last = last

    def accept(self, event: dict[str, Any]) -> list[Change] | None:
        """Changes to deliver ([] if already seen), or None if there is a gap before it."""
        rev = event["revision"]
        if rev <= self.last:
            return []
        # a daemon on etcd says the feed's previous revision (they increase, not by one)
        prev = event.get("prev", rev - 1)
        if not isinstance(prev, int) or prev > self.last:
            return None
        self.last = rev
        return changes_of(event)

    def accept_history(self, changes: list[Change]) -> list[Change]:
        out = [c for c in changes if c.revision > self.last]
        if out:
            self.last = out[-1].revision
        return out


def poll_ms(idle_since: float, timeout: float | None) -> int:
    """How long a follower waits for the next event: at most IDLE_CHECK (it then catches
    up from history in case an event beat the subscription), never past its idle timeout."""
    wait = IDLE_CHECK
    if timeout is not None:
        wait = min(wait, idle_since + timeout - time.monotonic())
    return max(0, int(wait * 1000))


class Wait(NamedTuple):
    """Wait up to ``ms`` for a feed message; send back its frames, or None."""

    ms: int


class CatchUp(NamedTuple):
    """Read the history after ``seq.last`` (it advances ``seq``); send back the changes."""

    seq: Sequencer


class Deliver(NamedTuple):
    """Hand these changes (maybe none) to the follower's user; send back nothing."""

    changes: list[Change]


Action = Wait | CatchUp | Deliver


def follow(since: int, timeout: float | None = None,
           floor: Callable[[], int] | None = None) -> Generator[Action, Any, None]:
    """Changes after ``since``, in order, no gap, no repeat; ends after ``timeout`` idle
    seconds (None: never). ``floor``: a revision the follower's user already holds by
    other means (the mirror's reloads), skipped without asking history for it."""
    seq = Sequencer(since)
    yield Deliver((yield CatchUp(seq)))
    idle_since = time.monotonic()
    while True:
        if floor is not None:
            seq.last = max(seq.last, floor())
        frames = yield Wait(poll_ms(idle_since, timeout))
        if frames is None:
            yield Deliver((yield CatchUp(seq)))  # an event may have beaten the subscription
            if timeout is not None and time.monotonic() - idle_since >= timeout:
                return
            continue
        event = decode_event(frames)
        if event is None:
            continue
        out = seq.accept(event)
        yield Deliver((yield CatchUp(seq)) if out is None else out)
        idle_since = time.monotonic()


def run_follow(plan: Generator[Action, Any, None], sub: Any,
               catch_up: Callable[[Sequencer], list[Change]]) -> Iterator[list[Change]]:
    """Drive :func:`follow` with a sync SUB socket; yields each delivery."""
    reply: Any = None
    while True:
        try:
            action = plan.send(reply)
        except StopIteration:
            return
        if isinstance(action, Wait):
            reply = sub.recv_multipart() if sub.poll(action.ms) else None
        elif isinstance(action, CatchUp):
            reply = catch_up(action.seq)
        else:
            reply = None
            yield action.changes
