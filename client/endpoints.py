"""Where the daemon listens: given explicitly, or read from the data dir's ``flowd.lock``.

Both transports ask an :class:`Endpoints` for the address to connect to and,
when no reply came, for the error that says why (as far as the lock can tell).
The files themselves are read by :mod:`flowd_client.discovery`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import psutil

from .curve import CurveKeys
from .discovery import (
    check_daemon_owner,
    default_data_dir,
    is_locked,
    not_a_dir,
    read_lock_info,
    spawn_daemon,
    starting_daemon,
)
from .errors import FlowdError, InvalidArgumentError, UnavailableError
from .hints import start_hint


def down_error(what: str, data_dir: Path | None) -> UnavailableError:
    """UnavailableError for a daemon that is not running: ``what`` plus how to start one.

    ``data`` keeps ``what`` and the dir, so flowctl can name its own way instead
    (``--autostart``, not ``autostart=True``).
    """
    return UnavailableError(f"{what}; {start_hint(data_dir, cli=False)}",
                            {"hint": "start", "what": what,
                             "data_dir": None if data_dir is None else str(data_dir)})


def autostart_default(endpoint: str | None) -> bool:
    """``FLOWD_AUTOSTART=1`` turns autostart on for clients that find their daemon
    through a data dir (never for an explicit endpoint)."""
    return endpoint is None and os.environ.get("FLOWD_AUTOSTART", "") in ("1", "true", "yes")


def _alive(pid: Any) -> bool:
    """The lock file's pid is a live process (a crashed predecessor's stale content is not)."""
    return type(pid) is int and pid > 0 and psutil.pid_exists(pid)


class Endpoints:
    """Where the daemon listens: given explicitly, or read from the data dir's lock."""

    def __init__(self, endpoint: str | None, data_dir: str | os.PathLike[str] | None,
                 autostart: bool = False) -> None:
        self.explicit = endpoint
        self.data_dir = None if endpoint and data_dir is None else Path(
            data_dir if data_dir is not None else default_data_dir()).expanduser()
        self.autostart = autostart and endpoint is None
        self.events: str | None = None
        #: CURVE keys for tcp endpoints (flowd_client.curve), set by the client
        self.curve: CurveKeys | None = None

    def resolve(self, deadline: float) -> str:
        """The request endpoint. A daemon that holds the lock but has not advertised
        its endpoint yet (it is loading), or was started and has not taken the lock yet,
        is waited for until ``deadline``."""
        if self.explicit:
            return self.explicit
        d = self.data_dir
        assert d is not None
        spawned = False
        while True:
            if is_locked(d):
                info = read_lock_info(d) or {}
                if isinstance(info.get("endpoint"), str) and _alive(info.get("pid")):
                    check_daemon_owner(d, info)
                    self.events = info.get("events")
                    return info["endpoint"]
            elif self.autostart and not spawned:
                spawn_daemon(d)
                spawned = True
            elif not spawned and starting_daemon(d) is None:
                raise self.not_running()
            if time.monotonic() >= deadline:
                raise self.not_ready(spawned)
            time.sleep(0.02)

    def not_running(self) -> FlowdError:
        d = self.data_dir
        if d is not None and not_a_dir(d):
            return InvalidArgumentError(f"data dir {d} is not a directory")
        return down_error(f"no flowd is running for data dir {d}", d)

    def not_ready(self, spawned: bool) -> UnavailableError:
        d = self.data_dir
        if spawned:
            return UnavailableError(f"the flowd started for data dir {d} did not come up in "
                                    f"time; see {d / 'flowd.log' if d else 'its log'}")
        return UnavailableError(f"the flowd for data dir {d} is starting but was not ready in "
                                "time (still loading a big store?); retry, or see its log")

    def daemon_down(self) -> bool:
        return self.data_dir is not None and not self.explicit and not is_locked(self.data_dir)

    def no_answer(self, endpoint: str | None, timeout: float) -> UnavailableError:
        """No reply within the deadline: say why only as far as the lock can tell."""
        if self.explicit:
            return UnavailableError(f"nothing answered at {endpoint} within {timeout:g} s: "
                                    "is a flowd listening there?")
        if self.daemon_down():
            return down_error(f"flowd for data dir {self.data_dir} stopped before it answered",
                              self.data_dir)
        return UnavailableError(f"flowd at {endpoint} holds data dir {self.data_dir} but did "
                                f"not answer within {timeout:g} s (busy, stopped or stuck); "
                                "see its log")
