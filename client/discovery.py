"""Finding a daemon: the default data dir and the endpoints in ``flowd.lock``.

Shared by the client and the daemon (the daemon writes what this reads), so
both agree on names without the client importing the daemon.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import portalocker

LOCK_NAME = "flowd.lock"
SOCKET_NAME = "flowd.sock"
EVENTS_SOCKET_NAME = "flowd-events.sock"


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``FLOWD_DATA_DIR`` > ``$XDG_STATE_HOME/flowd`` > ``~/.local/state/flowd``.

    The one rule for both sides (the daemon's config uses it too), so a tool
    and the daemon never look in different places. A relative
    ``XDG_STATE_HOME`` is ignored, as the XDG spec says.
    """
    env = os.environ if environ is None else environ
    if env.get("FLOWD_DATA_DIR"):
        return Path(env["FLOWD_DATA_DIR"]).expanduser()
    state = env.get("XDG_STATE_HOME", "")
    if state and os.path.isabs(state):
        return Path(state) / "flowd"
    home = env.get("HOME") or os.path.expanduser("~")
    return Path(home) / ".local" / "state" / "flowd"


def read_lock_info(data_dir: Path) -> dict[str, Any] | None:
    """The lock file's JSON, or None if absent, empty or being rewritten."""
    try:
        raw = (Path(data_dir) / LOCK_NAME).read_bytes()
        info = json.loads(raw)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def is_locked(data_dir: Path) -> bool:
    """True if some process holds the data-dir lock (a daemon runs or is starting there)."""
    try:
        f = open(Path(data_dir) / LOCK_NAME, "rb")  # noqa: SIM115
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return False
    with f:
        try:
            portalocker.lock(f, portalocker.LOCK_SH | portalocker.LOCK_NB)
        except portalocker.LockException:
            return True
        portalocker.unlock(f)
        return False
