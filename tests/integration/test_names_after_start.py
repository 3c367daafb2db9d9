"""A real daemon indexes the names of the flows it loaded after it is ready, a step per
loop turn (flowd.store.index_step): nobody has to ask for it, a name asked for meanwhile
is answered in full, and a flow named right after the start comes after the loaded ones."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.awaiting import wait_for

FLOWS = 30_000  # several steps of the index (flowd.store.INDEX_STEP)


def _tool_file(path: Path) -> dict[str, list[str]]:
    """A flows.json another program wrote (parsed fully at the first start), and the ids
    of each name in order; a hundred flows share each name."""
    flows = {f"flow_{i:08x}": {"id": f"flow_{i:08x}", "name": f"n{i % 300}", "plans": [],
                               "created": "2024-05-01T09:00:00",
                               "updated": "2024-05-01T09:00:00"} for i in range(FLOWS)}
    path.mkdir(mode=0o700, parents=True)
    (path / "flows.json").write_bytes(orjson.dumps({"version": "3.0", "flows": flows}))
    by_name: dict[str, list[str]] = {}
    for fid, flow in flows.items():
        by_name.setdefault(flow["name"], []).append(fid)
    return by_name


@pytest.mark.timeout(120)
def test_names_are_indexed_after_ready_by_the_loop(make_daemon, tmp_path: Path) -> None:
    data = tmp_path / "data"
    by_name = _tool_file(data)
    d = make_daemon(data)
    for start in ("parsed", "own file"):  # the loader's dicts, then flowd's own lines
        d.start()
        with d.client() as c:
            new = c.add_flow("n7", [])
            wait_for(lambda c=c: c.stats()["names_unindexed"] == 0, what="the names indexed")
            assert [f.id for f in c.find_by_name("n7")] == by_name["n7"] + [new], start
            assert [f.id for f in c.find_by_name("n8")] == by_name["n8"], start
            c.delete_flow(new)
        assert d.stop() == 0
