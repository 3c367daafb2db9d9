"""``flowd``: configuration, logging, signals, systemd notify, then the loop.

Exit codes (one table for flowd and flowctl: :mod:`flowd_client.exitcodes`): 0
after a clean stop, 1 for an I/O failure at start or stop (the journal still
holds every change), 2 when flowd refuses to start (bad configuration; a data
dir, file or socket path that is not flowd's own), 3 when another daemon holds
the data dir or another process the endpoint. Every failure is one line on
stderr.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tracemalloc
from collections.abc import Callable
from typing import Any

from flowd_client import exitcodes

from .config import Config, ConfigError, load_config, reload_live
from .daemon import Daemon
from .listen import EndpointBusy, EndpointRefused
from .logsetup import reopen_logs, setup_logging
from .loop import Loop
from .notify import Notifier
from .storage.curve_files import CurveDirRefused
from .storage.lock import DataDirBusy
from .storage.ownfiles import DataDirRefused, PlantedFileError

log = logging.getLogger("flowd")

#: failure -> exit code, first match wins (PlantedFileError is an OSError)
FAILURES: tuple[tuple[type[BaseException], int], ...] = (
    (DataDirBusy, exitcodes.BUSY), (EndpointBusy, exitcodes.BUSY),
    (DataDirRefused, exitcodes.USAGE), (PlantedFileError, exitcodes.USAGE),
    (EndpointRefused, exitcodes.USAGE), (CurveDirRefused, exitcodes.USAGE),
    (OSError, exitcodes.FAILED),
)


def _reloader(config: Config, argv: list[str]) -> Callable[[], None]:
    def reload() -> None:
        nonlocal config
        try:
            new = load_config(argv)
        except ConfigError as exc:
            log.error("SIGHUP: configuration not reloaded: %s", exc)
            return
        restart = reload_live(config, new)
        reopen_logs()
        log.info("SIGHUP: reloaded (log level %s)%s", new.log_level,
                 f"; these need a restart: {', '.join(restart)}" if restart else "")
        config = new
    return reload


def fail(exc: BaseException, when: str) -> int:
    """One line on stderr and the documented exit code; the traceback at DEBUG only."""
    code = next((c for cls, c in FAILURES if isinstance(exc, cls)), exitcodes.FAILED)
    if isinstance(exc, OSError) and not isinstance(exc, PlantedFileError):
        text = f"{when}: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    elif code == exitcodes.FAILED:
        text = f"{when}: unexpected {type(exc).__name__}: {exc}"
    else:
        text = str(exc)
    log.debug("%s failed", when, exc_info=exc)
    print(f"flowd: {text}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"flowd: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    if config.check_config:
        print(json.dumps(config.describe(), indent=2))
        return exitcodes.OK
    try:
        setup_logging(config.log_level, config.log_file)
    except OSError as exc:
        return fail(exc, f"cannot open the log file {config.log_file}")
    logging.raiseExceptions = False  # a full disk under --log-file: no traceback per line
    if config.tracemalloc:
        tracemalloc.start()
    os.umask(0o077)
    return _run(config, argv)


def _run(config: Config, argv: list[str]) -> int:
    rt = Daemon(config)
    try:
        rt.open()
    except Exception as exc:  # noqa: BLE001 - every start failure is one line
        rt.lock.release()
        return fail(exc, f"cannot open the data dir {config.data_dir}")
    notifier = Notifier()
    ok, code = True, exitcodes.OK
    try:
        server = Loop(rt, notifier)
        server.on_reload = _reloader(config, argv)
        if config.tracemalloc:
            rt.service.extra_stats = _heap_stats
        server.bind()
        rt.advertise()
        server.install_signals()
        server.run()
    except Exception as exc:  # noqa: BLE001
        code = fail(exc, "cannot serve")
    finally:
        try:
            ok = rt.close()
        except Exception as exc:  # noqa: BLE001
            ok = False
            fail(exc, "stopping")
        notifier.close()
    if code == exitcodes.OK and not ok:
        print("flowd: stopped, but the final snapshot was not written (the journal still "
              "holds every change; see the log)", file=sys.stderr)
        return exitcodes.FAILED
    log.info("stopped")
    return code


def _heap_stats() -> dict[str, Any]:
    current, peak = tracemalloc.get_traced_memory()
    return {"python_heap_bytes": current, "python_heap_peak_bytes": peak}


if __name__ == "__main__":
    sys.exit(main())
