"""What machine the figures come from: they mean little without it."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def _filesystem(path: Path) -> str:
    """Device and type of the filesystem the data dirs live on (fsync cost depends on it)."""
    best = None
    for part in psutil.disk_partitions(all=True):
        if str(path).startswith(part.mountpoint) and (
                best is None or len(part.mountpoint) > len(best.mountpoint)):
            best = part
    return f"{best.fstype} on {best.device} ({best.mountpoint})" if best else "unknown"


def describe(work_dir: Path) -> dict[str, Any]:
    """CPU, cores, RAM, OS, Python and library versions, date: the report's header."""
    import msgpack
    import orjson
    import zmq
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "pyzmq": f"{zmq.__version__} (libzmq {zmq.zmq_version()})",
        "msgpack": ".".join(map(str, msgpack.version)),
        "orjson": orjson.__version__,
        "redis_server": _version(["redis-server", "--version"]),
        "sqlite": _sqlite_version(),
        "filesystem": _filesystem(work_dir),
        "load average (1 min) at start": loadavg(),
    }


def loadavg() -> float:
    """Other work on the machine (tests running next to the bench) skews the figures."""
    return round(os.getloadavg()[0], 2)


def _sqlite_version() -> str:
    import sqlite3
    return sqlite3.sqlite_version
