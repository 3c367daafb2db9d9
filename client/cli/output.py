"""How flowctl prints: JSON documents, warnings, times, nested stats, doctor checks
(the document ``python -m flowd.offline doctor`` writes), and one-line usage errors
(:class:`~flowd_client.exitcodes.OneLineParser`, which flowd's parser is too).
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import Any

import orjson

from ..exitcodes import OneLineParser as OneLineParser  # flowctl's parser lives there


def emit_json(obj: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.buffer.flush()


def warn(message: str) -> None:
    print(f"flowctl: warning: {message}", file=sys.stderr)


def when(epoch: float | None) -> str:
    """Local time of an epoch plus how long ago: what an operator wants to read."""
    if not epoch:
        return "never"
    ago = time.time() - epoch
    return f"{datetime.fromtimestamp(epoch).isoformat(timespec='seconds')} ({span(ago)} ago)"


def span(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f} s"
    d, rest = divmod(s, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return " ".join(f"{v}{u}" for v, u in ((d, "d"), (h, "h"), (m, "m"), (s, "s")) if v)


def pretty(d: dict[str, Any], pad: str = "") -> list[str]:
    """Nested stats as indented lines; times and durations made readable."""
    lines: list[str] = []
    for key, v in d.items():
        label = key.replace("_", " ")
        if isinstance(v, dict) and v:
            lines += [f"{pad}{label}:"] + pretty(v, pad + "  ")
        elif isinstance(v, list) and v:
            lines += [f"{pad}{label}:"] + [f"{pad}  - {orjson.dumps(x).decode()}" for x in v]
        else:
            if key in ("started", "last_at") and isinstance(v, (int, float)):
                v = when(v)
            elif key == "uptime_seconds" and isinstance(v, (int, float)):
                label, v = "uptime", span(v)
            elif v in (None, {}, []):
                v = "-"
            lines.append(f"{pad}{label:<26} {v}")
    return lines


def print_checks(checks: list[dict[str, Any]]) -> None:
    """Doctor checks, one line each, then their details and (unless ok) the hint."""
    for c in checks:
        label = "FAIL" if c["status"] == "fail" else c["status"]
        print(f"{label:<5} {c['name']:<11} {c['message']}")
        for line in c.get("details", [])[:20]:
            print(f"{'':18}{line}")
        if c.get("hint") and c["status"] != "ok":
            print(f"{'':18}-> {c['hint']}")

