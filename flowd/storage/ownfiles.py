"""Opening the data dir and its files: never through a link, only flowd's own.

flowd often runs as root or as a service user, and the data dir may have
been writable by others before flowd tightened it. Whatever sits where flowd
expects its own file (a symbolic link to ``/etc/shadow``, a FIFO, a device,
another user's file) must never be read, written, chmodded or truncated
through. So every open in the data dir goes through :func:`open_own`:
``O_NOFOLLOW`` (a link is refused, never followed), ``O_NONBLOCK`` for the
open itself (a FIFO cannot hang the start-up), then ``fstat`` of what was
opened: a regular file owned by the expected uid, else :class:`PlantedFileError`.
New files are created with ``O_EXCL`` under a fresh name (:func:`fresh_name`),
never reused by name.

:func:`claim_dir` is the same rule for the directories themselves (the data
dir, and the runtime dir that holds sockets whose path is too long).
"""

from __future__ import annotations

import errno
import fcntl
import grp
import logging
import os
import pwd
import re
import secrets
import stat
from pathlib import Path

log = logging.getLogger("flowd.files")

_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
#: temp names flowd creates (``.<name>.tmp-<16 hex>``): leftovers of a crash, never evidence
TEMP_RE = re.compile(r"^\..+\.tmp-[0-9a-f]{16}$")


class PlantedFileError(OSError):
    """Something other than flowd's own regular file is where flowd expects one."""


class DataDirRefused(Exception):
    """The data dir (or the socket runtime dir) belongs to someone else."""


def user_name(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def group_name(gid: int) -> str:
    try:
        return f"group {gid} ({grp.getgrgid(gid).gr_name})"
    except KeyError:
        return f"group {gid}"


def kind(st: os.stat_result) -> str:
    """What an lstat result is, in words ("a symbolic link", "a FIFO", ...)."""
    mode = st.st_mode
    for test, word in ((stat.S_ISREG, "a regular file"), (stat.S_ISLNK, "a symbolic link"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return word
    return "an unknown kind of file"


def describe(path: Path) -> str:
    """``path``'s kind and owner, for a refusal message; never follows a link."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    text = f"{kind(st)} of {user_name(st.st_uid)}"
    if stat.S_ISLNK(st.st_mode):
        try:
            text += f" pointing to {os.readlink(path)}"
        except OSError:
            pass
    return text


def problem(st: os.stat_result, owner: int, want: str = "a regular file") -> str | None:
    """Why ``st`` is not flowd's own file (of kind ``want``), or None."""
    if kind(st) != want:
        return f"is {kind(st)}, not {want}"
    if st.st_uid != owner:
        return f"belongs to {user_name(st.st_uid)}, not to {user_name(owner)}"
    return None


def planted(path: Path, why: str) -> PlantedFileError:
    return PlantedFileError(
        errno.EPERM, f"{path} {why}: flowd never reads or writes through a file that is not "
        "its own; move it out of the way (flowd did not create it) and start again")


def open_own(path: Path, flags: int = os.O_RDONLY, mode: int = 0o600, *,
             owner: int | None = None) -> int:
    """Open ``path`` (a file flowd owns) without following links; checked after opening.

    Raises PlantedFileError for a link, FIFO, device, directory or foreign file,
    OSError as os.open does for the rest (FileNotFoundError, ...).
    """
    owner = os.geteuid() if owner is None else owner
    try:
        fd = os.open(path, flags | _NOFOLLOW | os.O_NONBLOCK, mode)
    except OSError as exc:
        # ELOOP: the last component is a link; ENXIO: a FIFO opened for writing
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
            raise planted(path, f"is {describe(path)}") from None
        raise
    try:
        why = problem(os.fstat(fd), owner)
        if why is not None:
            raise planted(path, why)
        if not flags & os.O_NONBLOCK:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_own(path: Path, *, owner: int | None = None) -> bytes:
    """The whole of one of flowd's files; bounded by its size (it is a regular file)."""
    fd = open_own(path, owner=owner)
    try:
        size = os.fstat(fd).st_size
        chunks: list[bytes] = []
        got = 0
        while True:
            chunk = os.read(fd, max(1 << 16, size - got))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            got += len(chunk)
    finally:
        os.close(fd)


def open_regular(path: str | os.PathLike[str]) -> int:
    """Open a file a user named (links followed, any owner), refusing what is no
    regular file, so that a FIFO or a device cannot hang or flood the reader."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise PlantedFileError(errno.EINVAL, f"{os.fspath(path)} is {kind(st)}, not a "
                               "regular file")
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return fd


def fresh_name(path: Path) -> Path:
    """A temp name next to ``path`` that nobody used before (created with O_EXCL)."""
    return path.with_name(f".{path.name}.tmp-{secrets.token_hex(8)}")


def create_new(path: Path, mode: int = 0o600) -> int:
    """A new file for writing; fails if anything (a link included) has the name."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, mode)


def remove_stale_temps(directory: Path) -> list[str]:
    """Delete flowd's own temp files left by a crash (never acknowledged data: the journal
    holds everything; a temp file is only a snapshot or link not yet installed)."""
    removed = []
    me = os.geteuid()
    for entry in os.scandir(directory):
        if not TEMP_RE.match(entry.name):
            continue
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISREG(st.st_mode) and st.st_uid == me:
            os.unlink(entry.path)
            removed.append(entry.name)
    return removed


# ------------------------------------------------------------------ directories


def dir_modes(gid: int | None) -> tuple[int, frozenset[int]]:
    """(the mode flowd sets, the modes it accepts) for its dirs: 0700 alone, 0750 (or a
    deliberate 0770) with a socket group, whose members must reach the sockets."""
    if gid is None:
        return 0o700, frozenset({0o700})
    return 0o750, frozenset({0o750, 0o770})


def claim_dir(path: Path, *, gid: int | None = None, what: str = "data dir") -> int:
    """Create or check one of flowd's directories; returns an O_DIRECTORY fd of it.

    Owned by flowd's uid, else DataDirRefused. Looser than allowed: tightened,
    with one WARNING. The fd pins the checked directory: the lock is taken on it.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise DataDirRefused(f"{what} {path} is {describe(path)}, not a directory of "
                                 "flowd's; choose another --data-dir") from None
        raise
    try:
        _check_dir(fd, path, gid, what)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_dir(fd: int, path: Path, gid: int | None, what: str) -> None:
    st = os.fstat(fd)
    me = os.geteuid()
    if st.st_uid != me:
        raise DataDirRefused(
            f"{what} {path} belongs to {user_name(st.st_uid)}, but flowd runs as "
            f"{user_name(me)}: run flowd as that user, or `chown {me} {path}` if the data "
            "is yours, or choose another --data-dir")
    target, allowed = dir_modes(gid)
    mode = stat.S_IMODE(st.st_mode)
    if gid is not None and st.st_gid != gid:
        try:
            os.fchown(fd, -1, gid)
        except PermissionError:
            raise DataDirRefused(f"{what} {path}: cannot give it to {group_name(gid)}: "
                                 "flowd's user must be a member of the socket group") from None
        log.info("%s %s: group set to %s (the socket group)", what, path, group_name(gid))
    if mode & 0o777 in allowed:
        return
    os.fchmod(fd, (mode & 0o7000) | target)
    if mode & 0o777 & ~max(allowed):
        log.warning("%s %s was mode %04o: other users could replace its files and sockets; "
                    "tightened it to %04o", what, path, mode & 0o777, target)
    else:
        log.info("%s %s: mode %04o -> %04o", what, path, mode & 0o777, target)
