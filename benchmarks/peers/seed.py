"""The seed's approach, re-implemented from its description (section 3 of the note).

FlowManagerUnified keeps the store in a dict of Flow dataclasses inside each
tool's process and, on every save, rewrites the whole flows.json with
``json.dump(indent=2, ensure_ascii=False)`` under an ``fcntl.flock``, then
``shutil.move``s the temp file over it (no fsync: the seed is not even
durable, which favours it here). Before that, tools searched a *list* of
flows linearly. Each job runs in a fresh interpreter so the orchestrator's
heap (and its garbage collector) does not distort the figures:

    python -m benchmarks.peers.seed load|reads|writes FLOWS_JSON [N]
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from ..workloads import Sample, time_ops


@dataclass
class Flow:
    id: str
    name: str
    plans: list[dict[str, Any]] = field(default_factory=list)
    created: str = field(default_factory=lambda: datetime.now().isoformat())
    updated: str = field(default_factory=lambda: datetime.now().isoformat())


class SeedManager:
    """The seed's FlowManagerUnified, reduced to what the benchmark exercises."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.data_dir = os.path.dirname(path)
        self._lock = threading.RLock()
        self.flows: dict[str, Flow] = {}
        self.current_flow_id: str | None = None
        self.meta: dict[str, Any] = {}
        self._dirty = False
        self._load_state()

    def _load_state(self) -> None:
        with open(self.path, encoding="utf-8") as f:
            raw = json.load(f)
        now = datetime.now().isoformat()
        self.flows = {fid: Flow(id=fid, name=fd["name"], plans=fd.get("plans", []),
                                created=fd.get("created", now), updated=fd.get("updated", now))
                      for fid, fd in raw.get("flows", {}).items()}
        self.current_flow_id = raw.get("current_flow_id")
        self.meta = raw.get("meta", {})

    def get_flow_by_id(self, flow_id: str) -> Flow | None:
        with self._lock:
            return self.flows.get(flow_id)

    def add_flow(self, name: str, plans: list[dict[str, Any]] | None = None) -> str:
        with self._lock:
            fid = f"flow_{uuid.uuid4().hex[:8]}"
            self.flows[fid] = Flow(fid, name, plans or [])
            self.current_flow_id = fid
            self._dirty = True
            return fid

    def save(self, force: bool = False) -> bool:
        with self._lock:
            if not self._dirty and not force:
                return True
            path = self.path
            with open(path, "a+", encoding="utf-8") as f_lock:
                fcntl.flock(f_lock, fcntl.LOCK_EX)
                try:
                    self._write(path, path + ".tmp")
                finally:
                    fcntl.flock(f_lock, fcntl.LOCK_UN)
            self._dirty = False
            return True

    def _write(self, path: str, tmp: str) -> None:
        self.meta["file_revision"] = self.meta.get("file_revision", 0) + 1
        data = {"version": "3.0",
                "meta": {"last_saved": datetime.now().isoformat(),
                         "file_revision": self.meta["file_revision"]},
                "current_flow_id": self.current_flow_id,
                "flows": {fid: vars(flow) for fid, flow in self.flows.items()}}
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False)
        shutil.move(tmp, path)


# ---------------------------------------------------------------- jobs (child side)


def job_load(path: str) -> dict[str, Any]:
    """Start-up cost: json.load + build the dict of Flow objects (the seed's load)."""
    rss0 = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    mgr = SeedManager(path)
    seconds = time.perf_counter() - t0
    rss = psutil.Process().memory_info().rss
    return {"seconds": seconds, "flows": len(mgr.flows), "rss": rss, "rss_before": rss0}


def job_reads(path: str, ops: int) -> dict[str, Any]:
    """Dict lookup (the seed) vs linear search of the older list-based store."""
    mgr = SeedManager(path)
    ids = random.Random(0).sample(list(mgr.flows), min(2000, len(mgr.flows)))
    as_list = [vars(f) for f in mgr.flows.values()]
    k = len(ids)
    by_dict = time_ops(lambda i: mgr.get_flow_by_id(ids[i % k]), ops * 10)

    def search(i: int) -> Any:
        fid = ids[i % k]
        return next((f for f in as_list if f["id"] == fid), None)
    list_ops = max(20, min(ops, 20_000_000 // max(1, len(as_list))))
    by_list = time_ops(search, list_ops, warmup=2)
    return {"dict": dataclasses.asdict(by_dict), "list": dataclasses.asdict(by_list)}


def job_writes(path: str, saves: int) -> dict[str, Any]:
    """add_flow + save(): one full rewrite of flows.json per write, as the seed does."""
    with tempfile.TemporaryDirectory(prefix="seedbench-") as tmp:
        target = os.path.join(tmp, "flows.json")
        shutil.copyfile(path, target)
        mgr = SeedManager(target)

        def add_save(i: int) -> None:
            mgr.add_flow(f"bench {i}", [{"id": 1, "title": "t", "done": False, "notes": ""}])
            mgr.save()
        sample = time_ops(add_save, saves, warmup=1)
        size = os.path.getsize(target)
    return {"add_save": dataclasses.asdict(sample), "bytes": size}


JOBS = {"load": job_load, "reads": job_reads, "writes": job_writes}


# ---------------------------------------------------------------- orchestrator side


def run_job(job: str, path: Path, *args: int, timeout: float = 1800) -> dict[str, Any]:
    """Run one job in a fresh interpreter and return its JSON result."""
    cmd = [sys.executable, "-m", "benchmarks.peers.seed", job, str(path), *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"seed {job} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def to_sample(d: dict[str, Any]) -> Sample:
    return Sample(**d)


def main(argv: list[str]) -> int:
    job, path, *rest = argv
    print(json.dumps(JOBS[job](path, *map(int, rest))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
