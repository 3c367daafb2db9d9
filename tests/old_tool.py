"""The seed's pre-daemon code as an old tool in its own process, for tests that put
it next to a real daemon (its own ``TZ`` where that matters)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SEED_TOOL = Path(__file__).resolve().parent / "seed_tool.py"


class Tool:
    """One old tool in its own process (``session`` mode of tests/seed_tool.py)."""

    def __init__(self, data_dir: Path, tz: str | None = None) -> None:
        env = dict(os.environ)
        if tz is not None:
            env["TZ"] = tz
        self.proc = subprocess.Popen([sys.executable, str(SEED_TOOL), str(data_dir), "session"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=env)

    def do(self, op: str, **args: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the tool died on {op}"
        return json.loads(line)["result"]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(10)
