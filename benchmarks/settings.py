"""Every knob of a benchmark run, read once from ``FLOWD_BENCH_*`` variables.

The defaults keep a full ``make bench`` within about 10-15 minutes on a 2-core
machine; ``FLOWD_BENCH_QUICK=1`` shrinks everything to a 1-2 minute smoke run
so the whole pipeline (peers, report, plot) can be checked while developing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _env(name: str, default: str) -> str:
    return os.environ.get("FLOWD_BENCH_" + name, default).strip() or default


def _flag(name: str) -> bool:
    return _env(name, "0").lower() in ("1", "true", "yes")


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(sorted({int(float(s)) for s in text.replace(" ", "").split(",") if s}))


@dataclass(frozen=True)
class Settings:
    """Sizes, repetitions and durations of one run (see benchmarks/README.md)."""

    quick: bool
    sizes: tuple[int, ...]
    runs: int
    read_ops: int
    write_ops: int
    seconds: float
    procs: int
    tp_size: int
    snap_seconds: float
    restart_writes: int
    #: the scaling step (issue 12): its sizes, and its paced writes' rate and length
    scale_sizes: tuple[int, ...]
    scale_rate: float
    scale_seconds: float
    apt: bool
    keep: bool
    only: frozenset[str]
    out_dir: Path
    name: str = field(default="latest")

    @property
    def big(self) -> int:
        """The largest store size of this run: where the 100k targets are checked."""
        return self.sizes[-1]

    @property
    def small(self) -> int:
        return self.sizes[0]

    def wants(self, workload: str) -> bool:
        return not self.only or workload in self.only


def load() -> Settings:
    """Settings from the environment; quick mode changes only the defaults."""
    quick = _flag("QUICK")
    return Settings(
        quick=quick,
        sizes=_sizes(_env("SIZES", "1000,10000" if quick else "1000,10000,100000")),
        runs=int(_env("RUNS", "1" if quick else "3")),
        read_ops=int(_env("READ_OPS", "500" if quick else "4000")),
        write_ops=int(_env("WRITE_OPS", "200" if quick else "1000")),
        seconds=float(_env("SECONDS", "0.6" if quick else "2.0")),
        procs=int(_env("PROCS", "8")),
        tp_size=int(_env("TP_SIZE", "1000")),
        snap_seconds=float(_env("SNAP_SECONDS", "3" if quick else "8")),
        restart_writes=int(_env("RESTART_WRITES", "3000" if quick else "30000")),
        scale_sizes=(10_000,) if quick else (10_000, 100_000, *((1_000_000,) if _flag("1M")
                                                                 else ())),
        scale_rate=float(_env("SCALE_RATE", "100")),
        scale_seconds=float(_env("SCALE_SECONDS", "5" if quick else "15")),
        apt=_flag("APT"),
        keep=_flag("KEEP"),
        only=frozenset(w for w in _env("ONLY", "").split(",") if w),
        out_dir=Path(_env("OUT", str(RESULTS_DIR))),
        name=_env("NAME", "quick" if quick else "latest"),
    )
