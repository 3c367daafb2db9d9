"""What every flowctl command shares: its failure, its context, the offline tools.

A command gets a :class:`Ctx` (parsed args, one lazily made client, the data
dir to inspect) and fails by raising :class:`CliError`. Work that needs the
daemon's own code runs ``python -m flowd.offline`` as a subprocess
(:func:`run_offline`), because ``flowd_client`` never imports the daemon.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..client import FlowClient
from ..discovery import default_data_dir
from ..exitcodes import FAILED, USAGE


class CliError(Exception):
    """A failure flowctl reports as ``flowctl: <message>`` with exit ``code``
    (an empty message: the failure was reported already, e.g. by flowd.offline)."""

    def __init__(self, message: str, code: int = FAILED) -> None:
        super().__init__(message)
        self.message, self.code = message, code


class Ctx:
    """What a command needs: the parsed args and, made on first use, one client."""

    def __init__(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
        self.args, self.parser = args, parser
        self._client: FlowClient | None = None

    @property
    def data_dir(self) -> Path | None:
        """The data dir to inspect on disk; None when only an endpoint was given."""
        if self.args.data_dir:
            d = Path(self.args.data_dir).expanduser()
        elif self.args.endpoint:
            return None
        else:
            d = default_data_dir()
        if d.exists() and not d.is_dir():
            raise CliError(f"data dir {d} is not a directory", USAGE)
        return d

    def new_client(self, timeout: float | None = None, **kw: Any) -> FlowClient:
        """A client for the chosen daemon; ``--autostart`` (else FLOWD_AUTOSTART) applies
        unless the command passes ``autostart`` itself."""
        kw.setdefault("autostart", self.args.autostart)
        kw.setdefault("curve_secret", self.args.curve_secret)
        kw.setdefault("curve_server", self.args.curve_server)
        return FlowClient(self.data_dir, self.args.endpoint,
                          timeout=self.args.timeout if timeout is None else timeout, **kw)

    @property
    def client(self) -> FlowClient:
        if self._client is None:
            self._client = self.new_client()
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def run_offline(*argv: str, capture: bool = False) -> subprocess.CompletedProcess[bytes]:
    """``python -m flowd.offline ...``; stderr always goes straight to ours, its lines
    prefixed ``flowctl:`` (so a failure is one line, as flowctl's own are)."""
    cmd = [sys.executable, "-m", "flowd.offline", "--prog", "flowctl", *argv]
    return subprocess.run(cmd, stdout=subprocess.PIPE if capture else None, check=False)
