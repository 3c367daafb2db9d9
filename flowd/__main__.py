"""``flowd``: configuration, logging, signals, systemd notify, then the loop.

Exit codes (:mod:`flowd_client.exitcodes`, shared with flowctl): OK after a
clean stop (final snapshot written), FAILED when the final snapshot failed
(the journal still holds everything) or the data dir cannot be opened, USAGE
for a bad configuration, BUSY when another daemon holds the data dir.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tracemalloc

from flowd_client.exitcodes import BUSY, FAILED, OK, USAGE

from .config import ConfigError, load_config, reload_live
from .logsetup import reopen_logs, setup_logging
from .notify import Notifier
from .runtime import Runtime, Settings
from .server import Server
from .storage.lock import DataDirBusy

log = logging.getLogger("flowd")


def _settings(config) -> Settings:
    return Settings(
        data_dir=config.data_dir, endpoint=config.endpoint,
        events_endpoint=config.events_endpoint, durability=config.durability,
        snapshot_interval=config.snapshot_interval, journal_max_bytes=config.journal_max_bytes,
        max_request_bytes=config.max_request_bytes, history=config.history,
    )


def _reloader(config, argv):
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"flowd: {exc}", file=sys.stderr)
        return USAGE
    if config.check_config:
        print(json.dumps(config.describe(), indent=2))
        return OK
    setup_logging(config.log_level, config.log_file)
    if config.tracemalloc:
        tracemalloc.start()
    os.umask(0o077)
    rt = Runtime(_settings(config))
    try:
        rt.open()
    except DataDirBusy as exc:
        print(f"flowd: {exc}", file=sys.stderr)
        return BUSY
    except OSError as exc:
        print(f"flowd: cannot open the data dir {config.data_dir}: {exc}", file=sys.stderr)
        return FAILED
    notifier = Notifier()
    server = Server(rt, notifier)
    server.on_reload = _reloader(config, argv)
    if config.tracemalloc:
        rt.service.extra_stats = _heap_stats
    try:
        server.bind()
        rt.advertise()
        server.install_signals()
        server.run()
    finally:
        ok = rt.close()
        notifier.close()
    log.info("stopped")
    return OK if ok else FAILED


def _heap_stats() -> dict:
    current, peak = tracemalloc.get_traced_memory()
    return {"python_heap_bytes": current, "python_heap_peak_bytes": peak}


if __name__ == "__main__":
    sys.exit(main())
