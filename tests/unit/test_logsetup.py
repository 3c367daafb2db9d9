"""flowd.logsetup: formats (human and journald), file reopen, rate limiting."""

from __future__ import annotations

import io
import logging
import os
import re
import stat
from pathlib import Path

import pytest

from flowd import logsetup
from flowd.logsetup import RateLimitedLogger, reopen_logs, set_level, setup_logging

HUMAN_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) flowd\.\w+: ")


@pytest.fixture(autouse=True)
def restore_root_logger():
    """Each test installs its own handler; put the root logger back after."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    if logsetup._handler is not None:
        root.removeHandler(logsetup._handler)
        logsetup._handler.close()
        logsetup._handler = None
    root.setLevel(level)
    root.handlers[:] = handlers


def test_human_format_on_stderr() -> None:
    out = io.StringIO()
    setup_logging("INFO", environ={}, stream=out)
    logging.getLogger("flowd.loop").info("hello %s", "world")
    logging.getLogger("flowd.loop").debug("hidden")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert HUMAN_LINE.match(lines[0]) and lines[0].endswith("INFO flowd.loop: hello world")


def test_journal_format_has_priorities_and_no_timestamps() -> None:
    out = io.StringIO()  # no fileno: JOURNAL_STREAM alone decides
    setup_logging("DEBUG", environ={"JOURNAL_STREAM": "8:1234"}, stream=out)
    log = logging.getLogger("flowd.loop")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    log.critical("c")
    assert out.getvalue().splitlines() == [
        "<7>flowd.loop: d", "<6>flowd.loop: i", "<4>flowd.loop: w",
        "<3>flowd.loop: e", "<2>flowd.loop: c",
    ]


def test_journal_format_prefixes_every_traceback_line() -> None:
    out = io.StringIO()
    setup_logging("INFO", environ={"JOURNAL_STREAM": "1:1"}, stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("flowd.x").exception("failed")
    lines = out.getvalue().splitlines()
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>RuntimeError: boom"


def test_journal_stream_compared_with_stderr_inode(tmp_path: Path) -> None:
    with open(tmp_path / "err", "w") as f:
        st = os.fstat(f.fileno())
        setup_logging("INFO", environ={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, stream=f)
        logging.getLogger("flowd.a").info("to journal")
        # A child that redirected stderr inherits JOURNAL_STREAM: not journald.
        setup_logging("INFO", environ={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"},
                      stream=f)
        logging.getLogger("flowd.a").info("to a file")
    lines = (tmp_path / "err").read_text().splitlines()
    assert lines[0] == "<6>flowd.a: to journal"
    assert HUMAN_LINE.match(lines[1])


def test_setup_replaces_its_own_handler_only() -> None:
    root = logging.getLogger()
    before = len(root.handlers)
    setup_logging("INFO", environ={}, stream=io.StringIO())
    setup_logging("INFO", environ={}, stream=io.StringIO())
    assert len(root.handlers) == before + 1


def test_log_file_is_private_and_reopened(tmp_path: Path) -> None:
    path = tmp_path / "flowd.log"
    setup_logging("INFO", path, environ={"JOURNAL_STREAM": "1:1"})
    log = logging.getLogger("flowd.loop")
    log.info("first")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    rotated = tmp_path / "flowd.log.1"
    path.rename(rotated)
    reopen_logs()
    log.info("second")
    assert "first" in rotated.read_text() and "second" not in rotated.read_text()
    text = path.read_text()
    assert HUMAN_LINE.match(text) and "second" in text  # journal format is for stderr only


def test_reopen_logs_without_file_is_a_noop() -> None:
    setup_logging("INFO", environ={}, stream=io.StringIO())
    reopen_logs()


def test_levels() -> None:
    setup_logging("warning", environ={}, stream=io.StringIO())
    assert logging.getLogger().level == logging.WARNING
    set_level("DEBUG")
    assert logging.getLogger("flowd.x").isEnabledFor(logging.DEBUG)
    with pytest.raises(ValueError, match="loud"):
        set_level("loud")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def limited():
    out = io.StringIO()
    setup_logging("DEBUG", environ={}, stream=out)
    clock = Clock()
    rl = RateLimitedLogger(logging.getLogger("flowd.loop"), interval=10.0, burst=2,
                           max_keys=3, clock=clock)
    return rl, clock, out


def messages(out: io.StringIO) -> list[str]:
    return [line.split(": ", 1)[1] for line in out.getvalue().splitlines()]


def test_rate_limit_burst_then_suppressed_summary(limited) -> None:
    rl, clock, out = limited
    results = [rl.warning("peer-a", "refused %d", i) for i in range(10)]
    assert results == [True, True] + [False] * 8
    assert rl.warning("peer-b", "other peer") is True  # keys are independent
    clock.now += 10.0
    assert rl.warning("peer-a", "refused again") is True
    assert messages(out) == [
        "refused 0", "refused 1", "other peer",
        "suppressed 8 similar messages (peer-a) in 10s", "refused again",
    ]
    assert "WARNING flowd.loop: suppressed" in out.getvalue()


def test_rate_limit_flush_reports_tail(limited) -> None:
    rl, clock, out = limited
    for _ in range(5):
        rl.error("k", "bad")
    rl.flush()  # window not over yet: nothing
    assert messages(out) == ["bad", "bad"]
    clock.now += 11
    rl.flush()
    assert messages(out)[-1] == "suppressed 3 similar messages (k) in 10s"
    rl.flush()
    assert len(messages(out)) == 3


def test_rate_limit_bounds_keys(limited) -> None:
    rl, clock, out = limited
    for i in range(100):  # a client inventing a new key per request
        rl.warning(f"id-{i}", "refused %d", i)
    assert len(rl._windows) == 3 + 1  # max_keys plus the overflow key
    assert messages(out) == ["refused 0", "refused 1", "refused 2", "refused 3", "refused 4"]
    clock.now += 10
    rl.warning("fresh", "after the window")
    assert "suppressed 95 similar messages (<other keys>) in 10s" in messages(out)
    assert messages(out)[-1] == "after the window"


def test_rate_limit_skips_disabled_levels(limited) -> None:
    rl, _, out = limited
    set_level("INFO")
    assert rl.debug("k", "quiet") is False
    assert rl.info("k", "loud") is True
    assert messages(out) == ["loud"]


def test_rate_limit_reports_caller_location(limited) -> None:
    rl, _, out = limited
    logsetup._handler.setFormatter(logging.Formatter("%(filename)s:%(funcName)s"))
    rl.warning("k", "x")
    rl.log(logging.WARNING, "k", "y")
    assert out.getvalue().splitlines() == [
        "test_logsetup.py:test_rate_limit_reports_caller_location"] * 2
