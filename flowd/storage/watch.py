"""Noticing at once that something rewrote flows.json: inotify on the data directory.

The directory is watched, not the file: the old tools replace flows.json by a
rename, which a watch on the old inode would never see. Renames onto it,
writes closed on it, and its removal all count; so does a queue overflow (the
kernel dropped events: look anyway). Where inotify is missing (not Linux, no
``inotify_simple``, out of watches) :meth:`DirWatch.open` returns None and the
server loop's one-second stat check is all there is.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .snapshot import SNAPSHOT

log = logging.getLogger("flowd.watch")

try:
    from inotify_simple import INotify, flags
except ImportError:  # pragma: no cover - a platform without inotify
    INotify = None


class DirWatch:
    """An inotify fd for the server loop's poller; :meth:`flows_json_touched` drains it."""

    def __init__(self, inotify: INotify) -> None:
        self.inotify = inotify

    @classmethod
    def open(cls, directory: Path) -> DirWatch | None:
        if INotify is None:
            log.info("inotify_simple is not available: checking flows.json every second")
            return None
        try:
            ino = INotify(nonblocking=True)
        except OSError as exc:
            log.info("no inotify (%s): checking flows.json every second", exc)
            return None
        mask = (flags.MOVED_TO | flags.CLOSE_WRITE | flags.DELETE | flags.CREATE
                | flags.MOVE_SELF | flags.DELETE_SELF)
        try:
            ino.add_watch(directory, mask)
        except OSError as exc:
            ino.close()
            log.warning("cannot watch %s (%s): checking flows.json every second", directory, exc)
            return None
        return cls(ino)

    def fileno(self) -> int:
        return self.inotify.fileno()

    def flows_json_touched(self) -> bool:
        """Read every queued event; True if one may concern flows.json."""
        touched = False
        try:
            events = self.inotify.read(timeout=0)
        except (BlockingIOError, InterruptedError):
            return False
        for event in events:
            if event.name == SNAPSHOT or event.mask & (flags.Q_OVERFLOW | flags.MOVE_SELF
                                                       | flags.DELETE_SELF):
                touched = True
        return touched

    def changed(self) -> bool:
        """Read every queued event; True if there was any (a watched dir of key files)."""
        try:
            return bool(self.inotify.read(timeout=0))
        except (BlockingIOError, InterruptedError):
            return False

    def close(self) -> None:
        self.inotify.close()
