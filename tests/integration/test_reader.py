"""Other programs read flows.json: they must never see a half-written or missing file.

A reader process parses flows.json in a tight loop while writers add and
update flows and the daemon rewrites the snapshot every 0.2 s. Every parse
must succeed, give a schema-3.0 document, and never go back in revision.

Run as a program, this file is the reader: ``python test_reader.py PATH SECONDS``;
it prints one JSON line of counts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

READ_SECONDS = 6.0


def reader(path: str, seconds: float) -> dict[str, Any]:
    parses = failures = went_back = 0
    errors: list[str] = []
    revisions: set[int] = set()
    last = -1
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open(path, "rb") as f:
                doc = json.loads(f.read().decode("utf-8"))
            rev = doc["meta"]["revision"]
            if doc["version"] != "3.0" or not isinstance(doc["flows"], dict):
                raise ValueError("not a 3.0 document")
            if doc["current_flow_id"] is not None and doc["current_flow_id"] not in doc["flows"]:
                raise ValueError("current_flow_id names no flow")
        except Exception as exc:  # noqa: BLE001 - every failure counts
            failures += 1
            if len(errors) < 5:
                errors.append(f"{type(exc).__name__}: {exc}")
            continue
        parses += 1
        went_back += rev < last
        last = max(last, rev)
        revisions.add(rev)
    return {"parses": parses, "failures": failures, "errors": errors,
            "went_back": went_back, "revisions": len(revisions), "last": last}


def writer(c: Any, tag: str, stop: threading.Event, count: list[Any]) -> None:
    try:
        write_loop(c, tag, stop, count)
    except Exception as exc:  # noqa: BLE001 - reported by the test
        count.append(exc)


def write_loop(c: Any, tag: str, stop: threading.Event, count: list[Any]) -> None:
    mine: list[str] = []
    i = 0
    while not stop.is_set():
        if i % 3 == 2 and mine:
            c.update_flow(mine[i % len(mine)], name=f"{tag}-{i}-renamed",
                          plans=[{"step": i, "텍스트": "값" * (i % 50)}])
        else:
            mine.append(c.add_flow(f"{tag}-{i}", [{"i": i}]))
        if i % 25 == 24:
            c.delete_flow(mine.pop(0))
        i += 1
        count[0] += 1


def test_reader_never_sees_a_broken_file(make_daemon, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    d = make_daemon(data_dir, "--snapshot-interval", "0.2")
    d.start()
    with d.client(timeout=10) as c:
        for i in range(300):  # a file big enough that writing it takes a moment
            c.add_flow(f"base-{i}", [{"pad": "x" * 300}])
        assert c.save(force=True)
    stop = threading.Event()
    counts: list[list[Any]] = [[0], [0]]
    clients = [d.client(timeout=10) for _ in counts]
    threads = [threading.Thread(target=writer, args=(cl, f"w{n}", stop, counts[n]))
               for n, cl in enumerate(clients)]
    proc = subprocess.Popen([sys.executable, __file__, str(data_dir / "flows.json"),
                             str(READ_SECONDS)], stdout=subprocess.PIPE, text=True)
    for t in threads:
        t.start()
    try:
        out, _ = proc.communicate(timeout=READ_SECONDS + 60)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        for cl in clients:
            cl.close()
    assert proc.returncode == 0
    result = json.loads(out.strip().splitlines()[-1])
    print(f"\nreader: {result}, writes: {counts[0][0] + counts[1][0]}")
    assert result["failures"] == 0, result["errors"]
    assert result["parses"] > 50
    assert result["went_back"] == 0
    assert result["revisions"] >= 5  # the file really was rewritten while it was read
    assert counts[0][0] > 0 and counts[1][0] > 0
    assert [len(cnt) for cnt in counts] == [1, 1], counts  # no writer failed


if __name__ == "__main__":
    print(json.dumps(reader(sys.argv[1], float(sys.argv[2]))))
