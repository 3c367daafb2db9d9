"""``FlowClient``: the synchronous client tools import.

Same API as the seed's FlowManagerUnified (get_all_flows, get_flow_by_id,
add_flow, delete_flow, set_current, save) against the daemon, plus
compare-and-set, plan operations, batches, watch and an optional local cache.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import zmq

from . import curve
from .api import BatchBuilder, FlowAPI, Steps
from .connection import Connection, drive
from .endpoints import Endpoints, autostart_default
from .feed import follow, run_follow
from .mirror import Mirror
from .model import Change
from .sockets import open_subscriber


class FlowClient(FlowAPI):
    """Talks to one flowd. Safe to share between threads; survives ``os.fork()``.

    ``data_dir``: find the daemon through that dir's ``flowd.lock`` (default:
    ``FLOWD_DATA_DIR`` or ``~/.local/state/flowd``). ``endpoint``: connect
    there instead. ``timeout``: every call's deadline in seconds, retries
    included. ``cache``: serve reads from a local mirror kept current by the
    change feed. ``autostart``: start a daemon for ``data_dir`` if none runs.
    ``curve_secret`` / ``curve_server`` (else FLOWD_CURVE_SECRET / FLOWD_CURVE_SERVER):
    this client's NAME.key_secret file and the daemon's server.key (path or z85 text),
    for a tcp endpoint of a flowd with ``--curve-dir``.
    """

    def __init__(self, data_dir: str | os.PathLike[str] | None = None,
                 endpoint: str | None = None, timeout: float = 5.0, *, cache: bool = False,
                 autostart: bool | None = None, retries: int = 2,
                 curve_secret: str | os.PathLike[str] | None = None,
                 curve_server: str | os.PathLike[str] | None = None) -> None:
        if autostart is None:
            autostart = autostart_default(endpoint)
        self._endpoints = Endpoints(endpoint, data_dir, autostart)
        self._endpoints.curve = curve.load_keys(curve_secret, curve_server)
        self._connection = Connection(self._endpoints, timeout, retries)
        self.timeout = timeout
        self._mirror = None
        #: open watch generators -> the pid that made them (close() must end them first)
        self._watches: weakref.WeakKeyDictionary[Generator[Change, None, None], int] = (
            weakref.WeakKeyDictionary())
        if cache:
            mirror = Mirror(self._connection, self.events_endpoint())
            mirror.start()
            self._mirror = mirror

    @property
    def data_dir(self) -> Path | None:
        return self._endpoints.data_dir

    def _drive(self, steps: Steps) -> Any:
        return drive(self._connection, steps,
                     None if self._mirror is None else self._read_own_write)

    def _read_own_write(self, revision: int) -> None:
        """A write is acknowledged: wait until the mirror holds it."""
        if self._mirror is not None:
            self._mirror.wait_for(revision, self.timeout)

    @property
    def current_flow_id(self) -> str | None:
        return self.get_current_flow_id()

    @contextmanager
    def batch(self) -> Iterator[BatchBuilder]:
        """Operations collected in the block apply atomically on exit (all or nothing)."""
        builder = BatchBuilder()
        yield builder
        if builder.ops:
            builder.results = self.commit_batch(builder.ops)

    def events_endpoint(self) -> str:
        if self._endpoints.events is None:
            self._endpoints.events = curve.events_endpoint(self._endpoints.explicit,
                                                           self.hello()["events"])
        return self._endpoints.events

    def watch(self, since: int | None = None, timeout: float | None = None) -> Iterator[Change]:
        """Changes after revision ``since`` (default: from now), in order, no gap, no repeat.

        Raises CompactedError if ``since`` is older than the daemon's history:
        read the store again and watch from its revision. ``timeout`` ends the
        iteration after that many idle seconds (None: follow forever).
        """
        if since is None:
            since = self.ping()["revision"]  # "now" is the call, not the first next()
        gen = self._watch(since, timeout)
        self._watches[gen] = os.getpid()
        return gen

    def _watch(self, since: int, timeout: float | None) -> Generator[Change, None, None]:
        sub = open_subscriber(self._connection.context, self.events_endpoint(),
                              self._endpoints.curve)
        try:
            for changes in run_follow(follow(since, timeout), sub, self.catch_up):
                yield from changes
        except zmq.ContextTerminated:
            return  # close() was called while this watch waited in another thread
        finally:
            sub.close(0)

    def close(self) -> None:
        if self._mirror is not None:
            self._mirror.stop()
        self._close_watches()
        self._connection.close()

    def _close_watches(self) -> None:
        """End suspended watches: their SUB sockets would keep the context's term() waiting
        forever. A watch running in another thread gets ETERM from term() instead."""
        pid = os.getpid()
        for gen, owner in list(self._watches.items()):
            if owner != pid:
                continue  # a parent's watch after fork: its socket is not ours to close
            try:
                gen.close()
            except ValueError:
                pass  # executing in another thread right now
        self._watches.clear()

    def __enter__(self) -> FlowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
