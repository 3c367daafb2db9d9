"""The fixture check every integration test gets: a daemon log with a traceback or an
unexpected ERROR line fails the test (conftest.Daemon.log_problems)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Daemon

LOG = """\
2026-12-01 23:04:11,548 INFO flowd: loaded 0 flows
2026-12-01 23:04:12,000 WARNING flowd.journal: dropped a torn tail
2026-12-01 23:04:12,100 ERROR flowd.journal: journal fsync failed: [Errno 5] EIO
2026-12-01 23:04:12,200 ERROR flowd.loop: timer work failed; retrying in a second
Traceback (most recent call last):
  File "x.py", line 1, in <module>
2026-12-01 23:04:13,000 CRITICAL flowd: out of memory
"""


@pytest.mark.daemon_errors(".")  # these logs are made up, full of errors on purpose
def test_tracebacks_and_error_lines_are_problems(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "data")
    assert d.log_problems(()) == []  # no log yet
    d.log.write_text(LOG)
    problems = d.log_problems(())
    assert [p.split(" ")[2] if not p.startswith("Traceback") else "TB" for p in problems] == [
        "ERROR", "ERROR", "TB", "CRITICAL"]


@pytest.mark.daemon_errors(".")
def test_declared_errors_are_expected(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "data")
    d.log.write_text(LOG)
    left = d.log_problems((r"fsync failed", r"^Traceback", r"timer work failed"))
    assert left == ["2026-12-01 23:04:13,000 CRITICAL flowd: out of memory"]
    assert d.log_problems((".",)) == []
