"""What one client reading every flow costs every other client (issue 12).

At each scale size, on the scale step's daemon: one client lists the whole store
(``get_all_flows``, paged) while a second process pings the daemon every 5 ms, and
the pings' latency (p50, p99, max) over the listing's window is what the other tools
feel. Twice, in the same run: pages as JSON text (the daemon joins its lines, the
client decodes them) and the decoded pages an older client asks for (the daemon
decodes and packs each flow), which is the baseline.

    python -m benchmarks.listing_bench ping DATA_DIR SECONDS   (the pinging child)
"""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import time
from typing import Any, cast

from flowd_client import FlowClient
from flowd_client.model import Flow

from .daemon import Flowd
from .results import Results
from .workloads import percentile

PING_EVERY = 0.005
#: the pinger's own bound: a listing at 1M flows takes 20-40 s on 2 cores
PING_SECONDS = 600.0


def listing(d: Flowd, res: Results, n: int) -> None:
    """Both forms of listing, each beside a pinger; into ``listing_*`` results."""
    for form in ("json", "decoded"):
        seconds, pings = _beside_pinger(d, form)
        pings.sort()
        res.put("listing", f"flowd {form}", n, {
            "seconds": seconds, "pings": len(pings),
            "p50_ms": percentile(pings, 50) * 1e3, "p99_ms": percentile(pings, 99) * 1e3,
            "max_ms": pings[-1] * 1e3 if pings else 0.0})


def _beside_pinger(d: Flowd, form: str) -> tuple[float, list[float]]:
    """(the listing's seconds, the ping latencies while it ran)."""
    child = subprocess.Popen([sys.executable, "-m", "benchmarks.listing_bench", "ping",
                              str(d.data_dir), str(PING_SECONDS)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    try:
        if child.stdout.readline().strip() != "pinging":
            raise RuntimeError("listing bench: the pinger did not start")
        with d.client(timeout=300.0) as c:
            t0 = time.perf_counter()
            count = len(c.get_all_flows() if form == "json" else _decoded_listing(c))
            seconds = time.perf_counter() - t0
        child.stdin.write("stop\n")
        child.stdin.flush()
        out = json.loads(child.stdout.readline())
    finally:
        child.kill()
        child.wait(30)
    if count < 1:
        raise RuntimeError("listing bench: the store listed no flows")
    return seconds, out["lat"]


def _decoded_listing(c: FlowClient) -> dict[str, Flow]:
    """The listing an older client makes: decoded pages (no ``json``)."""
    conn, flows = c._connection, cast("dict[str, Flow]", {})
    page, _ = conn.request("get_all_flows", {}, False)
    while True:
        flows.update((f["id"], Flow.from_wire(f)) for f in page["flows"])
        if page["next"] is None:
            return flows
        page, _ = conn.request("get_all_flows", {"cursor": page["next"]}, False)


def ping(data_dir: str, seconds: float) -> None:
    """Ping every 5 ms until told to stop on stdin (or ``seconds`` pass); then print
    the latencies of the pings since "pinging" as JSON."""
    lat: list[float] = []
    sel = selectors.DefaultSelector()
    sel.register(sys.stdin, selectors.EVENT_READ)
    with FlowClient(data_dir, timeout=60.0) as c:
        c.ping()
        print("pinging", flush=True)
        end = time.monotonic() + seconds
        while time.monotonic() < end and not sel.select(PING_EVERY):
            t = time.perf_counter()
            c.ping()
            lat.append(time.perf_counter() - t)
    print(json.dumps({"lat": lat}), flush=True)


def row(res: Results, n: int, form: str) -> dict[str, Any]:
    return res.get("listing", f"flowd {form}", n) or {}


if __name__ == "__main__":
    if sys.argv[1:2] != ["ping"]:
        sys.exit("usage: python -m benchmarks.listing_bench ping DATA_DIR SECONDS")
    ping(sys.argv[2], float(sys.argv[3]))
