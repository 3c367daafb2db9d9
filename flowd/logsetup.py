"""Logging for the daemon: one handler on the root logger, a format journald
understands when run by systemd, a log file that SIGHUP can reopen, and a
rate limiter so a hostile client cannot flood the log with refused requests.

Modules log through `logging.getLogger("flowd.<module>")`.
"""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import sys
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import IO, Any, cast

HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(name)s: %(message)s"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_lock = threading.Lock()
_handler: logging.Handler | None = None


def syslog_priority(levelno: int) -> int:
    """The syslog priority journald should record for a logging level."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class JournalFormatter(logging.Formatter):
    """`<P>name: message` with no timestamp: journald adds its own and, with
    its default SyslogLevelPrefix=yes, turns <P> into the entry's priority.
    Every line of a multi-line record (tracebacks) gets the prefix, because
    journald stores each line as its own entry."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        text = super().format(record)
        return "\n".join(prefix + line for line in text.split("\n"))


class ReopenableFileHandler(logging.handlers.WatchedFileHandler):
    """Appends to a file created 0600 (log lines name clients and flows).
    It reopens by itself when logrotate moves the file, and on `reopen()`
    for `copytruncate`-free rotation schemes that signal with SIGHUP."""

    def _open(self) -> io.TextIOWrapper:
        def opener(path: str, flags: int) -> int:
            return os.open(path, flags, 0o600)

        # text mode: a TextIOWrapper, as logging.FileHandler's own
        return cast(io.TextIOWrapper, open(self.baseFilename, self.mode, encoding=self.encoding,
                                           errors=self.errors, opener=opener))

    def reopen(self) -> None:
        self.acquire()
        try:
            if self.stream is not None:
                self.stream.flush()
                self.stream.close()
            self.stream = self._open()
            self._statstream()
        finally:
            self.release()


def _under_journald(environ: Mapping[str, str], stream: IO[str]) -> bool:
    """True when stderr is systemd's journal stream. JOURNAL_STREAM is
    inherited by children that redirect stderr, so compare device:inode when
    the stream has a file descriptor; trust the variable when it has not."""
    value = environ.get("JOURNAL_STREAM")
    if not value:
        return False
    try:
        dev, ino = (int(part) for part in value.split(":"))
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return True
    return (st.st_dev, st.st_ino) == (dev, ino)


def _make_handler(log_file: str | os.PathLike[str] | None, environ: Mapping[str, str],
                  stream: IO[str] | None) -> logging.Handler:
    if log_file is not None:
        handler: logging.Handler = ReopenableFileHandler(os.fspath(log_file), encoding="utf-8")
        handler.setFormatter(logging.Formatter(HUMAN_FORMAT))
        return handler
    stream = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(stream)
    journal = _under_journald(environ, stream)
    handler.setFormatter(JournalFormatter() if journal else logging.Formatter(HUMAN_FORMAT))
    return handler


def setup_logging(level: str, log_file: str | os.PathLike[str] | None = None,
                  environ: Mapping[str, str] | None = None, *,
                  stream: IO[str] | None = None) -> None:
    """Install the daemon's one handler on the root logger (so library
    warnings are kept too), replacing the one a previous call installed.
    `stream` (default sys.stderr) is used when log_file is None. Raises
    ValueError for an unknown level and OSError if the file cannot be opened."""
    global _handler
    level_no = _level_number(level)
    handler = _make_handler(log_file, os.environ if environ is None else environ, stream)
    root = logging.getLogger()
    with _lock:
        if _handler is not None:
            root.removeHandler(_handler)
            _handler.close()
        _handler = handler
        root.addHandler(handler)
    root.setLevel(level_no)
    logging.captureWarnings(True)


def set_level(level: str) -> None:
    """Change the level of the running daemon (SIGHUP reload)."""
    logging.getLogger().setLevel(_level_number(level))


def reopen_logs() -> None:
    """Reopen the log file after rotation (SIGHUP); a no-op for stderr."""
    handler = _handler
    if isinstance(handler, ReopenableFileHandler):
        handler.reopen()


def _level_number(level: str) -> int:
    name = str(level).upper()
    if name not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")
    return logging.getLevelName(name)


@dataclass
class _Window:
    start: float
    count: int = 1
    suppressed: int = 0
    level: int = logging.NOTSET


class RateLimitedLogger:
    """Lets at most `burst` records per key through in each `interval`
    seconds, counts the rest, and logs "suppressed N similar messages" when
    the key's window ends (on its next record, or on flush()). Keys are
    bounded by `max_keys`: a client inventing keys lands in one shared
    overflow key (OVERFLOW_KEY, the only key beyond max_keys), so neither
    the log nor this object's memory can be flooded. Thread-safe."""

    OVERFLOW_KEY = "<other keys>"

    def __init__(self, logger: logging.Logger, interval: float = 10.0, burst: int = 5, *,
                 max_keys: int = 1000, clock: Callable[[], float] = time.monotonic) -> None:
        if interval <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("interval must be > 0, burst and max_keys >= 1")
        self.logger = logger
        self.interval = interval
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._windows: dict[Hashable, _Window] = {}
        self._lock = threading.Lock()

    def log(self, level: int, key: Hashable, msg: str, *args: Any, **kwargs: Any) -> bool:
        """Log unless `key` is over its limit; returns whether it was logged."""
        return self._log(level, key, msg, args, kwargs)

    def debug(self, key: Hashable, msg: str, *args: Any, **kwargs: Any) -> bool:
        return self._log(logging.DEBUG, key, msg, args, kwargs)

    def info(self, key: Hashable, msg: str, *args: Any, **kwargs: Any) -> bool:
        return self._log(logging.INFO, key, msg, args, kwargs)

    def warning(self, key: Hashable, msg: str, *args: Any, **kwargs: Any) -> bool:
        return self._log(logging.WARNING, key, msg, args, kwargs)

    def error(self, key: Hashable, msg: str, *args: Any, **kwargs: Any) -> bool:
        return self._log(logging.ERROR, key, msg, args, kwargs)

    def flush(self) -> None:
        """Report every ended window's suppressed count and forget those keys;
        call it from a periodic timer so a flood's tail is reported too."""
        now = self._clock()
        with self._lock:
            ended = self._pop_ended(now)
        for key, window in ended:
            self._report(key, window)

    def _log(self, level: int, key: Hashable, msg: str, args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> bool:
        if not self.logger.isEnabledFor(level):
            return False
        now = self._clock()
        with self._lock:
            ended: list[tuple[Hashable, _Window]] = []
            if key not in self._windows and len(self._windows) >= self.max_keys:
                ended = self._pop_ended(now)
                if len(self._windows) >= self.max_keys:
                    key = self.OVERFLOW_KEY
            emit, previous = self._account(key, level, now)
        for old_key, window in ended + ([(key, previous)] if previous else []):
            self._report(old_key, window)
        if emit:
            kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 2
            self.logger.log(level, msg, *args, **kwargs)
        return emit

    def _account(self, key: Hashable, level: int, now: float) -> tuple[bool, _Window | None]:
        """Returns (emit this record?, the just-ended window if it suppressed any)."""
        window = self._windows.get(key)
        if window is None or now - window.start >= self.interval:
            self._windows[key] = _Window(start=now)
            return True, (window if window is not None and window.suppressed else None)
        if window.count < self.burst:
            window.count += 1
            return True, None
        window.suppressed += 1
        window.level = max(window.level, level)
        return False, None

    def _pop_ended(self, now: float) -> list[tuple[Hashable, _Window]]:
        ended = [(k, w) for k, w in self._windows.items() if now - w.start >= self.interval]
        for key, _ in ended:
            del self._windows[key]
        return [(k, w) for k, w in ended if w.suppressed]

    def _report(self, key: Hashable, window: _Window) -> None:
        self.logger.log(window.level, "suppressed %d similar messages (%s) in %.0fs",
                        window.suppressed, key, self.interval)


class RefusalReport:
    """Writes refused because the disk failed (full, read-only, EIO): the first refusal
    is logged at once, later ones as one line per ``interval`` with their counts. A
    full disk fails every write: one line per refusal flooded the log (302 in 0.1 s).
    The loop calls :meth:`flush` at least once per interval."""

    def __init__(self, logger: logging.Logger, interval: float = 1.0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self.total = 0
        self._writes = self._groups = 0
        self._error: BaseException | None = None
        self._last_line = -float("inf")

    def refused(self, writes: int, exc: BaseException) -> None:
        self.total += writes
        if not self._writes and self._clock() - self._last_line >= self.interval:
            self._last_line = self._clock()
            self.logger.error("journal append failed (%s): %d writes refused, nothing applied",
                              exc, writes)
            return
        self._writes += writes
        self._groups += 1
        self._error = exc

    def flush(self) -> None:
        now = self._clock()
        if not self._writes or now - self._last_line < self.interval:
            return
        self.logger.error("journal appends still failing (last: %s): %d writes in %d groups "
                          "refused in the last %.1f s, %d since the daemon started",
                          self._error, self._writes, self._groups, now - self._last_line,
                          self.total)
        self._last_line = now
        self._writes = self._groups = 0
