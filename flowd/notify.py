"""The systemd notify protocol (sd_notify(3)) without libsystemd: datagrams of
"KEY=value" lines sent to $NOTIFY_SOCKET.

With Type=notify, systemd considers flowd started only once READY=1 arrives
(after the store is loaded and the sockets are bound), and with WatchdogSec=
it restarts a daemon whose loop stops sending WATCHDOG=1. Outside systemd
NOTIFY_SOCKET is unset and every call is a cheap no-op. A failed send is
logged at debug level and never raised: notification must not take the
daemon down.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("flowd.notify")

#: Seconds a send may block when systemd's receive queue is full.
SEND_TIMEOUT = 5.0


def _parse_address(value: str | None) -> str | None:
    """NOTIFY_SOCKET -> an AF_UNIX address, or None if unset or unsupported
    (relative paths and vsock: addresses are not handled)."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    log.debug("unsupported NOTIFY_SOCKET %r; notifications disabled", value)
    return None


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    # A newline would start a new field; systemd would misread the rest.
    return str(value).replace("\n", " ")


class Notifier:
    """One AF_UNIX datagram socket to the service manager, opened on first
    use and kept until close(). Safe to call from several threads (the
    watchdog may be pinged from its own thread)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _parse_address(env.get("NOTIFY_SOCKET"))
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def _send_datagram(self, message: str) -> bool:
        """Send one datagram as is; True if it was handed to the socket."""
        if self._address is None:
            return False
        try:
            with self._lock:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._sock.settimeout(SEND_TIMEOUT)
                sock = self._sock
            sock.sendto(message.encode("utf-8"), self._address)
        except OSError as exc:
            log.debug("sd_notify %r to %r failed: %s", message, self._address, exc)
            return False
        return True

    def send(self, **fields: Any) -> bool:
        """send(status="loading", ready=True) -> "STATUS=loading\\nREADY=1"."""
        if not fields:
            return False
        lines = [f"{key.upper()}={_format_value(value)}" for key, value in fields.items()]
        return self._send_datagram("\n".join(lines))

    def ready(self) -> bool:
        """Startup finished: the daemon is serving."""
        return self.send(ready=1)

    def status(self, text: str) -> bool:
        """Free-form status shown by `systemctl status`."""
        return self.send(status=text)

    def stopping(self) -> bool:
        """Shutdown began (final snapshot under way)."""
        return self.send(stopping=1)

    def watchdog(self) -> bool:
        """Keep-alive; send at least every watchdog_interval() seconds."""
        return self.send(watchdog=1)

    def close(self) -> None:
        """Close the socket; a later send opens a new one."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of WATCHDOG_USEC, as sd_notify(3)
    recommends, or None when no watchdog applies to this process (unset,
    invalid, or WATCHDOG_PID names another process)."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 2 / 1_000_000
