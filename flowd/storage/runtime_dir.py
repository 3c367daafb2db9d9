"""Where the sockets go: ``DATA_DIR/flowd.sock``, or a private runtime dir when
that path is too long for AF_UNIX (107 bytes), claimed like the data dir."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .ownfiles import claim_dir

UNIX_PATH_MAX = 107


def runtime_dir(data_dir: Path) -> Path:
    """The private dir for sockets whose path under ``data_dir`` is too long."""
    digest = hashlib.sha256(os.fsencode(str(data_dir))).hexdigest()[:16]
    env = os.environ  # systemd's RuntimeDirectory= first: a service's /tmp is private
    base = env.get("RUNTIME_DIRECTORY") or env.get("XDG_RUNTIME_DIR") or "/tmp"
    return Path(base) / f"flowd-{os.geteuid()}-{digest}"


def socket_endpoint(data_dir: Path, name: str) -> str:
    """``ipc://<data_dir>/<name>``, or under :func:`runtime_dir` if too long for AF_UNIX
    (that dir is claimed, i.e. created or checked, when the daemon opens)."""
    path = data_dir / name
    if len(os.fsencode(str(path))) <= UNIX_PATH_MAX:
        return f"ipc://{path}"
    return f"ipc://{runtime_dir(data_dir) / name}"


def claim_runtime_dir(data_dir: Path, endpoints: tuple[str, ...], gid: int | None) -> None:
    """The fallback dir of long socket paths follows the data dir's rules (only
    when an endpoint lives there)."""
    run = runtime_dir(data_dir)
    if any(ep.startswith(f"ipc://{run}/") for ep in endpoints):
        os.close(claim_dir(run, gid=gid, what="socket runtime dir"))
