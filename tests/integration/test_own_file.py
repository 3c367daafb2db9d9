"""flowd reads its own flows.json back by its lines: real daemons, real restarts.

A restart on the file flowd wrote must give exactly the store it had (odd
names, shared names, unknown keys, the current flow) without parsing the
flows; and since the flows are not parsed, a byte changed inside one of them
afterwards must be caught by the file's check, the file kept aside and the
store rebuilt from the older generation plus the journal, with every
acknowledged write present (a parse would have loaded the changed value).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

QUIET = ("--snapshot-interval", "3600")  # snapshots only when asked: the journal keeps it all
NAMES = ["plain", "한글 이름", 'with "quotes"', "back\\slash", "tab\tnew\nline", "same", "same"]


def state(c) -> tuple[dict, str | None]:
    return ({fid: (f.name, f.plans) for fid, f in c.get_all_flows().items()},
            c.current_flow_id)


def test_restart_reads_its_own_file_by_lines_and_gets_the_same_store(make_daemon,
                                                                      tmp_path: Path) -> None:
    d = make_daemon(tmp_path / "data", *QUIET).start()
    with d.client(timeout=10) as c:
        ids = [c.add_flow(name, [{"i": i, "t": "계획"}]) for i, name in enumerate(NAMES)]
        c.update_flow(ids[0], name="renamed")
        c.delete_flow(ids[1])
        c.set_current(ids[2])
        assert c.save(force=True)
        before = state(c)
    d.stop()
    doc = json.loads((tmp_path / "data" / "flows.json").read_text(encoding="utf-8"))
    assert list(doc["flows"]) == [i for i in ids if i != ids[1]]  # valid JSON, in order
    d.start()
    with d.client(timeout=10) as c:
        assert c.stats()["load"]["read"] == "lines"
        assert state(c) == before
        assert sorted(f.id for f in c.find_by_name("same")) == sorted(ids[5:7])
        assert [f.id for f in c.find_by_name('with "quotes"')] == [ids[2]]
        assert [f.id for f in c.find_by_name("back\\slash")] == [ids[3]]
        assert c.find_by_name(NAMES[0]) == [] and len(c.find_by_name("renamed")) == 1


@pytest.mark.daemon_errors(r"flows.json is unreadable")
def test_a_digit_changed_inside_a_flow_is_caught_and_nothing_acknowledged_is_lost(
        make_daemon, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    d = make_daemon(data_dir, *QUIET).start()
    with d.client(timeout=10) as c:
        first = [c.add_flow(f"a{i}", [{"n": 5}]) for i in range(3)]
        assert c.save(force=True)
        later = [c.add_flow(f"b{i}", [{"n": 5}]) for i in range(3)]
        assert c.save(force=True)  # flows.json.prev: the first generation
        before = state(c)
    d.kill()
    path = data_dir / "flows.json"
    data = path.read_bytes()
    at = data.index(b'"n":5', data.index(later[1].encode() + b'": {')) + 4
    broken = data[:at] + b"4" + data[at + 1:]  # still valid JSON: a parse would take it
    json.loads(broken)
    with open(path, "r+b") as f:  # in place: the link .flows.json.written is this file too
        f.write(broken)
    d.start()
    with d.client(timeout=10) as c:
        assert state(c) == before
        load = c.stats()["load"]
        assert load["source"] == "flows.json.prev" and "check" in " ".join(load["corrupt"])
        assert c.get_flow_by_id(later[1]).plans == [{"n": 5}] and len(first) == 3
    kept = sorted(data_dir.glob("flows.json.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == broken
