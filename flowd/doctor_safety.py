"""Doctor checks of who may touch a data dir: its owner and mode, files that are not
flowd's, the sockets, the free disk. Read-only, like every doctor check; the rules
are the daemon's (flowd.storage.ownfiles) and the client's (discovery.check_daemon_owner).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from flowd_client.discovery import (
    EVENTS_SOCKET_NAME,
    LOCK_NAME,
    SOCKET_NAME,
    is_locked,
    read_lock_info,
)

from .doctor_check import Check
from .storage.journal import is_segment_name
from .storage.ownfiles import TEMP_RE, dir_modes, group_name, kind, user_name
from .storage.snapshot import PREVIOUS, SNAPSHOT, WRITTEN

#: names flowd expects to be its own regular files
OWN_FILES = (LOCK_NAME, SNAPSHOT, PREVIOUS, WRITTEN)
SOCKETS = (SOCKET_NAME, EVENTS_SOCKET_NAME)
#: free space under which writes may be refused soon (a journal step, a snapshot)
LOW_DISK_BYTES = 64 << 20


def _socket_gid(d: Path) -> int | None:
    """The socket group a running daemon was given: its sockets are 0660 for it."""
    for name in SOCKETS:
        try:
            st = os.lstat(d / name)
        except OSError:
            continue
        if stat.S_ISSOCK(st.st_mode) and st.st_mode & 0o060 == 0o060:
            return st.st_gid
    return None


def check_dir(d: Path) -> Check:
    if not d.is_dir():
        what = "is not a directory" if d.exists() else "does not exist"
        return Check("data dir", "fail", f"{d} {what}",
                     "start flowd once (it creates the dir, mode 0700) or pass --data-dir")
    st = d.stat()
    mode = stat.S_IMODE(st.st_mode) & 0o777
    if st.st_uid != os.geteuid():
        return Check("data dir", "warn", f"{d} is owned by {user_name(st.st_uid)}, not you",
                     f"flowd must run as {user_name(st.st_uid)}: it refuses (exit 2) a data "
                     "dir of another user; run flowctl as that user too")
    gid = _socket_gid(d)
    target, allowed = dir_modes(gid if gid == st.st_gid else None)
    if mode not in allowed:
        running = is_locked(d)
        return Check("data dir", "fail" if running else "warn",
                     f"{d} is mode {mode:04o}: other users can replace its files and sockets",
                     (f"chmod {target:o} {d} now: clients refuse to talk to a daemon there"
                      if running else f"chmod {target:o} {d} (flowd tightens it on start)"))
    group = f", {group_name(gid)} may connect" if gid is not None else ""
    return Check("data dir", "ok", f"{d} exists, mode {mode:04o}, owner "
                 f"{user_name(st.st_uid)}{group}")


def _problem(entry: os.DirEntry, owner: int) -> str | None:
    st = entry.stat(follow_symlinks=False)
    name = entry.name
    want = "a socket" if name in SOCKETS else "a regular file"
    expected = name in OWN_FILES or name in SOCKETS or is_segment_name(name)
    if expected and kind(st) != want:
        return f"{name} is {kind(st)}, not {want}"
    if st.st_uid != owner and (expected or TEMP_RE.match(name)):
        return f"{name} belongs to {user_name(st.st_uid)}"
    return None


def check_files(d: Path) -> Check:
    """A link, FIFO, device or foreign file where flowd expects its own: it refuses to
    start (and clients refuse to connect) until it is moved away."""
    owner = d.stat().st_uid
    bad = [p for p in (_problem(e, owner) for e in os.scandir(d)) if p is not None]
    if bad:
        return Check("files", "fail", f"{len(bad)} file(s) where flowd expects its own: "
                     + "; ".join(bad[:5]),
                     "flowd did not create these: move them out of the data dir, then "
                     "(re)start flowd; it never reads or writes through them", bad)
    return Check("files", "ok", f"every file flowd expects is a file of {user_name(owner)}")


def check_sockets(d: Path) -> Check:
    info = read_lock_info(d) or {}
    if not is_locked(d) or not info:
        return Check("sockets", "ok", "no daemon running: nothing to check")
    eps = [ep for ep in (info.get("endpoint"), info.get("events")) if isinstance(ep, str)]
    owner = d.stat().st_uid
    problems = [p for ep in eps for p in _endpoint_problems(ep, owner, info.get("curve") is True)]
    if problems:
        return Check("sockets", "fail", "; ".join(problems),
                     "a socket file that was removed or replaced is bound again within a "
                     "second; if this stays, restart flowd (it binds them 0600, or 0660 "
                     "for its --socket-group)")
    return Check("sockets", "ok", ", ".join(eps) + f" are {user_name(owner)}'s")


def _endpoint_problems(ep: str, owner: int, curve: bool = False) -> list[str]:
    if ep.startswith("tcp://"):
        host = ep[6:].rsplit(":", 1)[0].strip("[]")
        ok = curve or host in ("127.0.0.1", "localhost", "::1")  # CURVE: peers prove keys
        return [] if ok else [f"{ep} is not loopback: other machines can connect"]
    if not ep.startswith("ipc://"):
        return []
    path = Path(ep[6:])
    try:
        st = os.lstat(path)
    except OSError:
        if path.with_name(f".{path.name}.paused").exists():
            return [f"{path} is hidden: the daemon is near its open-file limit and accepts no "
                    "new connections until some close"]
        return [f"{path} is advertised but missing"]
    mode = stat.S_IMODE(st.st_mode)
    out = [] if stat.S_ISSOCK(st.st_mode) else [f"{path} is {kind(st)}, not a socket"]
    if st.st_uid not in (owner, 0):
        out.append(f"{path} belongs to {user_name(st.st_uid)}: an impostor may listen there")
    if mode & 0o007 or (mode & 0o070 and mode & 0o060 != 0o060):
        out.append(f"{path} is mode {mode:04o}, not 0600 (or 0660 for a socket group)")
    return out


def check_disk(d: Path) -> Check:
    st = os.statvfs(d)
    free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    msg = f"{free >> 20} MiB free of {total >> 20} MiB"
    if free < LOW_DISK_BYTES or (total and free < total // 100):
        return Check("disk", "warn", f"{msg}: writes will be refused when it is full",
                     "free some space on that filesystem; flowd refuses writes it cannot "
                     "make durable (UNAVAILABLE) and accepts them again once there is room")
    return Check("disk", "ok", msg)
