"""The run as a PNG: latency, throughput, start time and memory against store size.

Log-log axes because the systems differ by orders of magnitude (a dict get vs
a full-file rewrite); size-independent figures (the zmq echo floor) are drawn
as horizontal lines. Uses the Agg backend so it works without a display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

from .results import ANY_SIZE, Results  # noqa: E402
from .workloads import Sample  # noqa: E402

#: systems whose latency is not a per-request figure (many requests in flight)
NOT_LATENCY = ("flowd async",)
_COLORS: dict[str, Any] = {}


def _color(system: str) -> Any:
    """One distinct colour per system across all panels (tab20: dark shades first)."""
    if system not in _COLORS:
        i = len(_COLORS) % 20
        _COLORS[system] = plt.get_cmap("tab20")(2 * i if i < 10 else 2 * (i - 10) + 1)
    return _COLORS[system]


def _series(res: Results, workload: str, field: str,
            skip: tuple[str, ...] = ()) -> dict[str, tuple[list[int], list[float]]]:
    out = {}
    for system, per in res.data.get(workload, {}).items():
        if system in skip:
            continue
        pts = sorted((n, getattr(v, field) if isinstance(v, Sample) else v)
                     for n, v in per.items() if n != ANY_SIZE)
        pts = [(n, y) for n, y in pts if y]
        if pts:
            out[system] = ([n for n, _ in pts], [y for _, y in pts])
    return out


def _panel(ax: Any, series: dict[str, tuple[list[int], list[float]]], title: str,
           ylabel: str, floor: tuple[str, float | None] | None = None) -> None:
    for system, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=system, color=_color(system),
                lw=2.5 if system.startswith("flowd") else 1.2)
    if floor and floor[1]:
        ax.axhline(floor[1], ls="--", color="grey", label=floor[0])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("flows in store")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    if series:
        ax.legend(fontsize=7)


def render(res: Results, path: Path) -> None:
    fig, axes = plt.subplots(2, 3, figsize=(17, 10))
    echo = res.sample("read", "zmq echo", ANY_SIZE)
    _panel(axes[0][0], _series(res, "read", "p50_us", NOT_LATENCY),
           "get by id, 1 client: p50 latency", "µs", ("zmq echo floor", echo and echo.p50_us))
    _panel(axes[1][0], _series(res, "read", "ops_per_s"), "get by id, 1 client: throughput",
           "ops/s", ("zmq echo floor", echo and echo.ops_per_s))
    _panel(axes[0][1], _series(res, "write", "p50_us"), "durable add, 1 client: p50 latency",
           "µs")
    _panel(axes[1][1], _series(res, "write", "ops_per_s"), "durable add, 1 client: throughput",
           "ops/s")
    starts = _series(res, "start", "")
    starts.update({f"snapshot: {k}": v for k, v in _series(res, "snapshot", "").items()})
    _panel(axes[0][2], starts, "start to ready / load; snapshot or full save", "seconds")
    mem = {k: (xs, [y / 2**20 for y in ys]) for k, (xs, ys) in _series(res, "rss", "").items()}
    _panel(axes[1][2], mem, "resident memory", "MiB")
    fig.suptitle(f"flowd vs peers — {res.machine.get('cpu')}, {res.machine.get('cores')} cores, "
                 f"{res.machine.get('date')}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_scale(res: Results, path: Path) -> None:
    """Issue 12's scaling figures against store size: start, memory, latency, CPU."""
    sizes = res.sizes("scale_start")
    if not sizes:
        return
    fig, axes = plt.subplots(1, 4, figsize=(20, 5))

    def pick(workload: str, system: str, key: str | None = None, k: float = 1.0) -> list[float]:
        vals = [res.get(workload, system, n) for n in sizes]
        return [(v[key] if key else v) * k if v else float("nan") for v in vals]
    panels = [
        ("start to ready vs seed load", "seconds",
         {"flowd start": pick("scale_start", "flowd"),
          "seed load": pick("scale_seed_load", "seed")}),
        ("memory vs flows.json", "MiB",
         {"flowd RSS": pick("scale_rss", "flowd", None, 1 / 2**20),
          "flows.json (flowd's)": pick("scale_file_bytes", "flowd", None, 1 / 2**20),
          "flows.json as generated": pick("scale_source_bytes", "flowd", None, 1 / 2**20)}),
        ("paced add_flow while snapshots run", "ms",
         {k: pick("scale_add", "flowd", k) for k in ("p50_ms", "p99_ms", "max_ms")}
         | {"GIL wait max (probe)": pick("scale_gil", "flowd", "gil_max_ms")}),
        ("daemon CPU under paced writes", "% of a core",
         {"flowd": pick("scale_cpu", "flowd", None, 100.0)}),
    ]
    for ax, (title, ylabel, series) in zip(axes, panels, strict=True):
        _panel(ax, {name: (sizes, ys) for name, ys in series.items()}, title, ylabel)
    fig.suptitle(f"flowd at scale — {res.machine.get('cores')} cores, {res.machine.get('date')}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
