"""A stand-in for the old tools: the seed's pre-daemon FlowManagerUnified, file side only.

Written from the seed's description (section 3 of
``/work/shared/seed/000_556c60afaf59cc2a.txt``), not from flowd: it loads
``flows.json`` into memory, changes it there, and saves by opening
``flows.json`` with ``'a+'``, taking ``fcntl.flock(LOCK_EX)`` on that handle,
writing ``flows.json.tmp`` with ``json.dump(indent=2, ensure_ascii=False)`` and
``shutil.move``-ing it over ``flows.json`` before unlocking. It ignores
``flowd.lock``. What it writes is what the seed writes: ``version``,
``meta {last_saved, file_revision + 1}``, ``current_flow_id`` and, per flow,
``vars(flow)`` (id, name, plans, created, updated): ``meta.revision``, each
flow's ``revision`` and every unknown key are dropped.

The seed has no "update" method; a tool that edits a flow sets its fields and
``updated`` (:meth:`SeedTool.rename`, :meth:`SeedTool.set_plans`).

Run as a program for a loop of edits in another process::

    python tests/seed_tool.py DATA_DIR loop PREFIX COUNT [MAX_SLEEP]

or driven one JSON command per line on stdin (``session``: each answer is one
JSON line on stdout), so that a test can hold a loaded tool in another process
(with its own ``TZ``) while the daemon restarts::

    python tests/seed_tool.py DATA_DIR session
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


def now() -> str:
    return datetime.now().isoformat()


@dataclass
class Flow:
    id: str
    name: str
    plans: list[dict[str, Any]] = field(default_factory=list)
    created: str = field(default_factory=now)
    updated: str = field(default_factory=now)


class SeedTool:
    """Load on construction, change in memory, ``save()`` the whole file."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = os.fspath(data_dir)
        self.path = os.path.join(self.data_dir, "flows.json")
        self.flows: dict[str, Flow] = {}
        self.current_flow_id: str | None = None
        self.version = "3.0"
        self.meta: dict[str, Any] = {}
        self.load()

    # ------------------------------------------------------------ the seed's API

    def load(self) -> None:
        with open(self.path, encoding="utf-8") as f:
            raw = json.load(f)
        self.flows = {
            fid: Flow(id=fid, name=fd["name"], plans=fd.get("plans", []),
                      created=fd.get("created", now()), updated=fd.get("updated", now()))
            for fid, fd in raw.get("flows", {}).items()
        }
        self.current_flow_id = raw.get("current_flow_id")
        self.version = raw.get("version", "3.0")
        self.meta = raw.get("meta", {})

    def add_flow(self, name: str, plans: list[dict[str, Any]] | None = None) -> str:
        fid = f"flow_{uuid.uuid4().hex[:8]}"
        self.flows[fid] = Flow(fid, name, plans or [])
        self.current_flow_id = fid
        return fid

    def delete_flow(self, flow_id: str) -> bool:
        if flow_id not in self.flows:
            return False
        self.flows.pop(flow_id)
        if self.current_flow_id == flow_id:
            self.current_flow_id = next(iter(self.flows), None)
        return True

    def set_current(self, flow_id: str) -> bool:
        if flow_id not in self.flows:
            return False
        self.current_flow_id = flow_id
        return True

    # ------------------------------------------------------------ edits a tool makes

    def rename(self, flow_id: str, name: str) -> None:
        flow = self.flows[flow_id]
        flow.name, flow.updated = name, now()

    def set_plans(self, flow_id: str, plans: list[dict[str, Any]]) -> None:
        flow = self.flows[flow_id]
        flow.plans, flow.updated = plans, now()

    # ------------------------------------------------------------ save, as the seed does it

    def document(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "meta": {"last_saved": now(),
                     "file_revision": self.meta.get("file_revision", 0) + 1},
            "current_flow_id": self.current_flow_id,
            "flows": {fid: vars(flow) for fid, flow in self.flows.items()},
        }

    def save(self) -> bytes:
        """Write flows.json the seed's way; returns the bytes written."""
        tmp = self.path + ".tmp"
        data = self.document()
        os.makedirs(self.data_dir, exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as f_lock:
            f_lock.flush()
            try:
                fcntl.flock(f_lock, fcntl.LOCK_EX)
                with open(tmp, "w", encoding="utf-8") as f:
                    json.dump(data, f, indent=2, ensure_ascii=False)
                with open(tmp, "rb") as f:
                    written = f.read()
                shutil.move(tmp, self.path)
            finally:
                fcntl.flock(f_lock, fcntl.LOCK_UN)
        return written


def loop(data_dir: str, prefix: str, count: int, max_sleep: float) -> None:
    """``count`` rounds of load, add one flow, save; prints each added id and name."""
    rng = random.Random(prefix)
    for i in range(count):
        tool = SeedTool(data_dir)
        name = f"{prefix}-{i}"
        fid = tool.add_flow(name, [{"by": "seed tool", "i": i}])
        tool.save()
        print(fid, name, flush=True)
        time.sleep(rng.uniform(0, max_sleep))


def _command(tool: SeedTool | None, data_dir: str, cmd: dict[str, Any]) -> tuple[
        SeedTool | None, Any]:
    op = cmd["op"]
    if op == "load":
        tool = SeedTool(data_dir)
        return tool, {"ids": list(tool.flows), "file_revision": tool.meta.get("file_revision")}
    assert tool is not None, "load first"
    if op == "add":
        return tool, tool.add_flow(cmd["name"], cmd.get("plans"))
    if op == "delete":
        return tool, tool.delete_flow(cmd["id"])
    if op == "rename":
        return tool, tool.rename(cmd["id"], cmd["name"])
    if op == "set_plans":  # as the seed's callers do it: plans replaced, updated untouched
        tool.flows[cmd["id"]].plans = cmd["plans"]
        return tool, None
    if op == "set_updated":
        tool.flows[cmd["id"]].updated = cmd["value"]
        return tool, None
    if op == "set_current":
        return tool, tool.set_current(cmd["id"])
    if op == "file_revision":  # a file from elsewhere: a number flowd never wrote
        tool.meta["file_revision"] = cmd["value"]
        return tool, None
    if op == "save":
        tool.save()
        return tool, {"current": tool.current_flow_id, "now": now()}
    raise ValueError(f"unknown op {op}")


def session(data_dir: str) -> None:
    tool = None
    for line in sys.stdin:
        tool, result = _command(tool, data_dir, json.loads(line))
        print(json.dumps({"result": result}), flush=True)


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[1] == "session":
        session(argv[0])
        return 0
    if len(argv) >= 4 and argv[1] == "loop":
        loop(argv[0], argv[2], int(argv[3]), float(argv[4]) if len(argv) > 4 else 0.05)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
