"""``flowd``'s exit codes: the one table (``flowd --help`` and the README show it).

Every start or stop failure prints one line (``flowd: ...``) on stderr and
exits with one of these; a traceback goes to the log at DEBUG only.
"""

from __future__ import annotations

OK = 0
#: an I/O failure at start or stop (data dir unreadable, disk full or read-only, the final
#: snapshot not written: the journal still holds every change), or an unexpected error
FAILED = 1
#: refused to start: a bad setting, a data dir that is not flowd's user's, a link, FIFO
#: or foreign file where flowd expects its own file or socket
REFUSED = 2
#: busy: another daemon holds the data dir, or another process the endpoint
BUSY = 3

EXIT_CODES: dict[int, str] = {
    OK: "stopped cleanly (final snapshot written)",
    FAILED: "an I/O failure at start or stop (the journal still holds every acknowledged "
            "write), or an unexpected error",
    REFUSED: "refused to start: bad configuration, or a data dir, file or socket path that "
             "is not flowd's own",
    BUSY: "another daemon holds the data dir, or another process holds the endpoint",
}
