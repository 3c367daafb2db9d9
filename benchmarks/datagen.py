"""Realistic stores written straight to flows.json 3.0, so big stores load fast.

Adding 100k flows through the client would take minutes and measure the
wrong thing; every system instead starts from the same generated file (flowd
loads it, the seed json.loads it, Redis and SQLite are filled from it).
Generation is deterministic (seeded) so runs are comparable.
"""

from __future__ import annotations

import functools
import os
import random
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

WORDS = ("design", "review", "deploy", "release", "notes", "backlog", "sprint", "budget",
         "refactor", "migration", "meeting", "roadmap", "docs", "hiring", "audit")
KOREAN = ("프로젝트", "회의", "정리", "계획", "개발", "문서", "검토", "배포", "일정", "보고서")
BASE_TIME = datetime(2024, 5, 1, 9, 0, 0)
ID_SAMPLE = 2000


@dataclass(frozen=True)
class Dataset:
    """One generated store: its flows.json, its size and a sample of its ids."""

    path: Path
    size: int
    ids: tuple[str, ...]

    def copy_to(self, data_dir: Path) -> Path:
        """A fresh data dir holding only this flows.json (no journal, no lock), on disk
        as a store that has sat there a while is: a copy left in the page cache (the
        kernel writes dirty pages back after ~30 s) is written out by the first
        fdatasync of flowd's that frees its blocks, a 100-130 ms stall at 100k flows
        that measures this copy, not flowd (README, Durability)."""
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = data_dir / "flows.json"
        shutil.copyfile(self.path, target)
        fd = os.open(target, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return target


def flow_name(rng: random.Random, i: int) -> str:
    """About a third of the names are Korean, like the seed's users' data."""
    if rng.random() < 0.33:
        return f"{rng.choice(KOREAN)} {rng.choice(KOREAN)} {i}"
    return f"{rng.choice(WORDS)} {rng.choice(WORDS)} #{i}"


def make_plans(rng: random.Random) -> list[dict[str, Any]]:
    """3-5 small plan dicts, the shape tools keep in a flow."""
    return [{"id": k + 1, "title": f"{rng.choice(WORDS)} {rng.choice(KOREAN)} {k + 1}",
             "done": rng.random() < 0.4,
             "notes": "" if rng.random() < 0.5 else f"{rng.choice(WORDS)} by friday"}
            for k in range(rng.randint(3, 5))]


def make_flow(rng: random.Random, fid: str, i: int) -> dict[str, Any]:
    created = (BASE_TIME + timedelta(seconds=i * 7)).isoformat()
    updated = (BASE_TIME + timedelta(seconds=i * 7 + rng.randint(0, 86400))).isoformat()
    return {"id": fid, "name": flow_name(rng, i), "plans": make_plans(rng),
            "created": created, "updated": updated, "revision": 0}


def new_id(rng: random.Random, taken: dict[str, Any]) -> str:
    while True:
        fid = f"flow_{rng.getrandbits(32):08x}"
        if fid not in taken:
            return fid


def build_document(size: int, seed: int = 1) -> dict[str, Any]:
    """The whole flows.json 3.0 document for ``size`` flows."""
    rng = random.Random(seed)
    flows: dict[str, Any] = {}
    for i in range(size):
        fid = new_id(rng, flows)
        flows[fid] = make_flow(rng, fid, i)
    return {"version": "3.0",
            "meta": {"last_saved": BASE_TIME.isoformat(), "file_revision": 0, "revision": 0},
            "current_flow_id": next(iter(flows), None), "flows": flows}


def write_dataset(path: Path, size: int) -> Dataset:
    """Generate and write one store (2-space indent, UTF-8, as the daemon writes it)."""
    doc = build_document(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    ids = list(doc["flows"])
    sample = random.Random(size).sample(ids, min(ID_SAMPLE, len(ids)))
    return Dataset(path=path, size=size, ids=tuple(sample))


def load_docs(dataset: Dataset) -> dict[str, dict[str, Any]]:
    """The flows of a dataset as id -> flow dict (to fill Redis and SQLite)."""
    return orjson.loads(dataset.path.read_bytes())["flows"]


def sample_flow(i: int) -> tuple[str, list[dict[str, Any]]]:
    """(name, plans) for a new flow written by a benchmark; one of 256 premade ones,
    so building the payload costs the writer (of any system) next to nothing."""
    return _sample_flow(i % 256)


@functools.lru_cache(maxsize=256)
def _sample_flow(i: int) -> tuple[str, list[dict[str, Any]]]:
    rng = random.Random(i)
    return flow_name(rng, i), make_plans(rng)


class Datasets:
    """Generated stores under one work dir, made once per size and reused."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: dict[int, Dataset] = {}

    def get(self, size: int) -> Dataset:
        if size not in self._made:
            self._made[size] = write_dataset(self.root / f"flows-{size}.json", size)
        return self._made[size]
