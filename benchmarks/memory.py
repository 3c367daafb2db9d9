"""The memory yardstick: a plain Python process holding the same store as dicts.

flowd's RSS is compared with what the data costs as ordinary Python objects,
measured in a fresh interpreter that parses the same flows.json with
``json.load`` (the seed's way) or ``orjson.loads`` and keeps the result. The
raw bytes are dropped and the GC run before measuring, so only the dicts count.

    python -m benchmarks.memory FLOWS_JSON json|orjson
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

LOADERS = ("json", "orjson")


def _peak() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def measure(path: str, loader: str) -> dict[str, Any]:
    proc = psutil.Process()
    before = proc.memory_info().rss
    if loader == "orjson":
        import orjson
        raw = Path(path).read_bytes()
        doc = orjson.loads(raw)
        del raw
    else:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    gc.collect()
    return {"rss": proc.memory_info().rss, "rss_before": before, "peak": _peak(),
            "flows": len(doc["flows"])}


def plain_rss(path: Path, loader: str) -> dict[str, Any]:
    """Run :func:`measure` in a fresh interpreter and return its figures."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.memory", str(path), loader],
                         capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"memory probe ({loader}) failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], sys.argv[2])))
