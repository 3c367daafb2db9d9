"""What to tell a user whose daemon is down: only what they can do from where they are.

A Python caller can pass ``autostart=True``; a flowctl user cannot, but can add
``--autostart``. ``make run`` is named only inside a flowd checkout whose
``./data`` is the data dir in question, and a systemd unit only when one is
installed for that data dir.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from .discovery import default_data_dir

SYSTEM_DATA_DIR = Path("/var/lib/flowd")
SYSTEM_UNITS = (Path("/etc/systemd/system/flowd.service"),
                Path("/usr/lib/systemd/system/flowd.service"))


def user_unit_path() -> Path:
    """Where ``flowctl service install --user`` puts the unit (systemd's user search path)."""
    config = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(config) if config and os.path.isabs(config) else Path.home() / ".config"
    return base / "systemd" / "user" / "flowd.service"


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _unit_command(data_dir: Path) -> str | None:
    """The systemctl line that starts the installed unit serving ``data_dir``, if any."""
    user_default = default_data_dir({k: v for k, v in os.environ.items()
                                     if k != "FLOWD_DATA_DIR"})
    if _same(data_dir, user_default) and user_unit_path().exists():
        return "systemctl --user start flowd"
    if _same(data_dir, SYSTEM_DATA_DIR) and any(p.exists() for p in SYSTEM_UNITS):
        return "systemctl start flowd"
    return None


def _in_checkout_data(data_dir: Path) -> bool:
    """True in a flowd checkout whose ``make run`` serves exactly this data dir."""
    cwd = Path.cwd()
    return ((cwd / "Makefile").is_file() and (cwd / "flowd" / "__main__.py").is_file()
            and _same(data_dir, cwd / "data"))


def start_hint(data_dir: Path | None, *, cli: bool) -> str:
    """How to get a daemon for ``data_dir`` running, for a flowctl (``cli``) or Python user."""
    if data_dir is None:
        return "start a flowd that listens there, or check the endpoint"
    ways = []
    unit = _unit_command(data_dir)
    if unit:
        ways.append(f"`{unit}`")
    if _in_checkout_data(data_dir):
        ways.append("`make run` (in this checkout)")
    ways.append(f"`flowd --data-dir {shlex.quote(str(data_dir))}`")
    auto = ("add --autostart to the flowctl command" if cli
            else "pass autostart=True to the client")
    return f"start it with {' or '.join(ways)}, or {auto} (or set FLOWD_AUTOSTART=1)"
