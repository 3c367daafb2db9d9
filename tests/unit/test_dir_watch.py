"""flowd.storage.watch: inotify on the data dir sees every way flows.json is replaced."""

from __future__ import annotations

import os
import select
from pathlib import Path

import pytest

from flowd.storage.watch import DirWatch


def _readable(w: DirWatch) -> bool:
    return bool(select.select([w.fileno()], [], [], 2.0)[0])


def test_renames_onto_writes_to_and_removal_of_flows_json_are_seen(tmp_path: Path) -> None:
    w = DirWatch.open(tmp_path)
    if w is None:
        pytest.skip("no inotify here: flowd falls back to a stat check every second")
    try:
        (tmp_path / "other.tmp").write_text("x")
        assert _readable(w) and not w.flows_json_touched()  # other files: no check
        tmp = tmp_path / "flows.json.tmp"
        tmp.write_text("{}")
        w.flows_json_touched()
        os.replace(tmp, tmp_path / "flows.json")  # the old tools' shutil.move
        assert _readable(w) and w.flows_json_touched()
        with open(tmp_path / "flows.json", "a") as f:  # rewritten in place
            f.write(" ")
        assert _readable(w) and w.flows_json_touched()
        os.unlink(tmp_path / "flows.json")
        assert _readable(w) and w.flows_json_touched()
        assert not w.flows_json_touched()  # drained
    finally:
        w.close()
