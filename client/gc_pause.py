"""The cyclic GC paused while code builds many acyclic objects at once.

A page of a million-flow listing, a store loaded from its file: with the GC on,
each young collection walks every object built so far again and finds nothing
(a listing of 1M flows took 20 s with it, 12.9 s with each page's decode paused;
the daemon's recovery of 100k flows 1.7 s with it, 0.46 s without). Pure stdlib:
the client and the daemon share it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC and restore its previous state, even on error."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
