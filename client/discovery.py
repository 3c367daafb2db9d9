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
import psutil

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


def _data_dir_arg(cmdline: list[str]) -> str | None:
    for i, arg in enumerate(cmdline):
        if arg == "--data-dir" and i + 1 < len(cmdline):
            return cmdline[i + 1]
        if arg.startswith("--data-dir="):
            return arg.split("=", 1)[1]
    return None


def _is_flowd(cmdline: list[str]) -> bool:
    """``flowd ...``, ``python /venv/bin/flowd ...`` or ``python -m flowd ...``."""
    head = cmdline[:3]
    return (any(os.path.basename(a) == "flowd" for a in head[:2])
            or any(a == "-m" and b == "flowd" for a, b in zip(head, head[1:], strict=False)))


def starting_daemon(data_dir: Path) -> int | None:
    """The pid of a flowd started for ``data_dir`` (``--data-dir``) that has not taken
    its lock yet: a client right after ``Popen(flowd)`` waits for it instead of saying
    "not running". Scans the process table, so only the not-running path calls it."""
    try:
        want = Path(data_dir).resolve()
    except OSError:
        return None
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        arg = _data_dir_arg(cmdline) if _is_flowd(cmdline) else None
        if arg is None:
            continue
        try:
            where = Path(arg) if os.path.isabs(arg) else Path(proc.cwd()) / arg
            if where.expanduser().resolve() == want:
                return proc.info["pid"]
        except (psutil.Error, OSError):
            continue
    return None
