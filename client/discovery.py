"""Finding a daemon: the default data dir, the endpoints in ``flowd.lock``, and
starting one for autostart (the client's only file I/O is here).

Shared by the client and the daemon (the daemon writes what this reads), so
both agree on names without the client importing the daemon.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import UntrustedError

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


#: flowd.lock is a few hundred bytes; a bigger one is not flowd's
MAX_LOCK_BYTES = 64 * 1024


def _open_file(path: Path) -> int:
    """Open without following a link or blocking on a FIFO; a regular file only."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path} is not a regular file")
    return fd


def open_no_follow(path: str, flags: int) -> int:
    """An ``opener`` for open(): never through a link someone put in the data dir."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def read_lock_info(data_dir: Path) -> dict[str, Any] | None:
    """The lock file's JSON, or None if absent, empty, being rewritten or not a file."""
    try:
        fd = _open_file(Path(data_dir) / LOCK_NAME)
        try:
            raw = os.read(fd, MAX_LOCK_BYTES)
        finally:
            os.close(fd)
        info = json.loads(raw)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _held(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def is_locked(data_dir: Path) -> bool:
    """True if some process holds the data-dir lock (a daemon runs or is starting there).

    The daemon locks the directory itself (which a removed flowd.lock cannot undo)
    and flowd.lock; either one held means a daemon is there."""
    d = Path(data_dir)
    for path, flags in ((d, os.O_DIRECTORY), (d / LOCK_NAME, os.O_NOFOLLOW | os.O_NONBLOCK)):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
        except OSError:
            continue
        try:
            if _held(fd):
                return True
        finally:
            os.close(fd)
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
    import psutil  # only this rare path scans processes: not an import of every start

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


def check_daemon_owner(data_dir: Path, info: dict[str, Any]) -> None:
    """Refuse (UntrustedError) unless the daemon behind ``data_dir`` is its owner's.

    Before a client sends anything over ipc: ``flowd.lock`` and each advertised
    socket must belong to the data dir's owner (or root), and the dir (and a
    runtime dir holding the sockets) must not be writable by others, since
    anyone who can write there can put their own socket in flowd's place. A
    socket group (sockets 0660, dir group-writable for that group) is accepted.
    """
    d = Path(data_dir)
    try:
        st = os.stat(d)
        owner = st.st_uid
        trusted = {owner, 0}
        lock = os.lstat(d / LOCK_NAME)
    except OSError as exc:
        raise UntrustedError(f"cannot check data dir {d}: {exc.strerror}") from None
    if not stat.S_ISREG(lock.st_mode) or lock.st_uid not in trusted:
        raise UntrustedError(f"{d / LOCK_NAME} is not a file of the data dir's owner "
                             f"(uid {owner}): refusing to talk to whoever made it")
    socks = [_socket_stat(ep) for ep in (info.get("endpoint"), info.get("events"))]
    for path, sst in (s for s in socks if s is not None):
        if not stat.S_ISSOCK(sst.st_mode) or sst.st_uid not in trusted:
            raise UntrustedError(f"{path} is not a socket of the data dir's owner (uid "
                                 f"{owner}): another user may be impersonating flowd; "
                                 "nothing was sent")
    gids = {sst.st_gid for _, sst in (s for s in socks if s is not None)
            if sst.st_mode & 0o060 == 0o060}
    _check_writers(d, st, trusted, gids)
    for path, _ in (s for s in socks if s is not None):
        if path.parent != d:
            _check_writers(path.parent, os.stat(path.parent), trusted, gids)


def _socket_stat(endpoint: Any) -> tuple[Path, os.stat_result] | None:
    if not isinstance(endpoint, str) or not endpoint.startswith("ipc://"):
        return None
    path = Path(endpoint[len("ipc://"):])
    try:
        return path, os.lstat(path)
    except FileNotFoundError:
        return None  # not bound (yet, or again): nothing is there to trust or distrust
    except OSError as exc:
        raise UntrustedError(f"cannot check {path}: {exc.strerror}") from None


def _check_writers(d: Path, st: os.stat_result, trusted: set[int], gids: set[int]) -> None:
    if st.st_uid not in trusted:
        raise UntrustedError(f"{d} belongs to uid {st.st_uid}, not to the data dir's owner")
    if st.st_mode & 0o002 or (st.st_mode & 0o020 and st.st_gid not in gids):
        raise UntrustedError(
            f"{d} is mode {stat.S_IMODE(st.st_mode):04o}: other users can replace flowd's "
            "socket there, so nothing was sent; start flowd once (it tightens the dir) or "
            f"`chmod go-w {d}`")


def spawn_daemon(data_dir: Path) -> None:
    """Start a detached ``flowd`` for ``data_dir``; if several tools race, the lock picks one."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(data_dir / "flowd.log", "ab", opener=open_no_follow) as log:
        subprocess.Popen(
            [sys.executable, "-m", "flowd", "--data-dir", str(data_dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            close_fds=True)


def not_a_dir(data_dir: Path) -> bool:
    """Something other than a directory sits where the data dir should be."""
    return data_dir.exists() and not data_dir.is_dir()
