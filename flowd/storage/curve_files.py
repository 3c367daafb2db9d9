"""The files of ``--curve-dir``: the daemon's key pair and the allow-list directory.

``DIR/server.key`` and ``DIR/server.key_secret`` (zmq.auth certificate files)
are created on first start, both 0600, each written atomically (temp file,
fsync, rename): a crash leaves either no pair or a whole one. The secret must
be flowd's own file and readable by nobody else, else flowd refuses to start.
``DIR/clients/*.key`` are read as hostile input: no links followed, regular
files of flowd's user or root only, at most KEY_FILE_MAX_BYTES each.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import zmq
from flowd_client.curve import certificate_text, is_z85_key

from ..curve_keys import KEY_FILE_MAX_BYTES
from .fsio import atomic_write
from .ownfiles import claim_dir, read_own

SERVER_PUBLIC = "server.key"
SERVER_SECRET = "server.key_secret"
CLIENTS = "clients"
#: more files than this in clients/ and the rest are not read (one line says so)
MAX_CLIENT_FILES = 10_000


class CurveDirRefused(Exception):
    """The curve dir or its server key pair cannot be used safely; flowd does not start."""


@dataclass(frozen=True)
class ServerKeys:
    public: bytes
    secret: bytes
    created: bool


def _field(data: bytes, name: bytes) -> bytes | None:
    for line in data.splitlines():
        key, sep, value = line.strip().partition(b"=")
        if sep and key.strip() == name:
            text = value.strip().strip(b"\"'")
            return text if is_z85_key(text) else None
    return None


def _read_pair(curve_dir: Path) -> ServerKeys:
    secret_path = curve_dir / SERVER_SECRET
    st = os.lstat(secret_path)
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise CurveDirRefused(f"{secret_path} is readable by others (mode "
                              f"{stat.S_IMODE(st.st_mode):04o}); chmod 600 it, or remove the "
                              "pair to make a new one")
    data = read_own(secret_path)
    public, secret = _field(data, b"public-key"), _field(data, b"secret-key")
    if public is None or secret is None or zmq.curve_public(secret) != public:
        raise CurveDirRefused(f"{secret_path} is not a CURVE secret key file (a key pair "
                              "whose public half matches)")
    if _field(read_own(curve_dir / SERVER_PUBLIC), b"public-key") != public:
        raise CurveDirRefused(f"{curve_dir / SERVER_PUBLIC} does not hold the public half of "
                              f"{SERVER_SECRET}; remove both to make a new pair")
    return ServerKeys(public, secret, created=False)


def server_keys(curve_dir: Path) -> ServerKeys:
    """The daemon's key pair, created (0600, atomically) if neither file exists."""
    if not zmq.has("curve"):
        raise CurveDirRefused("--curve-dir: this pyzmq's libzmq has no CURVE support")
    os.close(claim_dir(curve_dir, what="curve dir"))
    os.close(claim_dir(curve_dir / CLIENTS, what="curve allow-list dir"))
    have = [(curve_dir / n).exists() or (curve_dir / n).is_symlink()
            for n in (SERVER_PUBLIC, SERVER_SECRET)]
    if all(have):
        return _read_pair(curve_dir)
    if any(have):
        present = SERVER_PUBLIC if have[0] else SERVER_SECRET
        raise CurveDirRefused(f"{curve_dir} holds {present} without its other half; restore "
                              "it, or remove it to make a new pair")
    public, secret = zmq.curve_keypair()
    atomic_write(curve_dir / SERVER_SECRET, [certificate_text(public, secret)], mode=0o600)
    atomic_write(curve_dir / SERVER_PUBLIC, [certificate_text(public)], mode=0o600)
    return ServerKeys(public, secret, created=True)


def _read_key_file(path: Path) -> bytes:
    """At most KEY_FILE_MAX_BYTES + 1 bytes of a regular file of flowd's user or root."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if st.st_uid not in (os.geteuid(), 0):
            raise OSError(errno.EPERM, f"owned by uid {st.st_uid}, not flowd's user or root")
        return os.read(fd, KEY_FILE_MAX_BYTES + 1)
    finally:
        os.close(fd)


def read_client_keys(curve_dir: Path) -> tuple[list[tuple[str, bytes]], list[str]]:
    """(file name, content) of every file in DIR/clients, and one line per unreadable one."""
    files, problems = [], []
    clients = curve_dir / CLIENTS
    try:
        names = sorted(os.listdir(clients))
    except OSError as exc:
        return [], [f"{clients}: cannot list: {exc.strerror or exc}"]
    if len(names) > MAX_CLIENT_FILES:
        problems.append(f"{clients}: {len(names)} files; only the first {MAX_CLIENT_FILES} read")
        names = names[:MAX_CLIENT_FILES]
    for name in names:
        if name.startswith("."):
            continue  # flowctl's temp files, editors' swap files
        try:
            files.append((name, _read_key_file(clients / name)))
        except OSError as exc:
            reason = "a symbolic link" if exc.errno == errno.ELOOP else exc.strerror or exc
            problems.append(f"{name}: {reason}; skipped")
    return files, problems
