"""Reading a flows file for the offline tools: the daemon's loader, a progress bar.

Shared by ``flowd.offline`` (migrate, normalize) and ``flowd.doctor``; a file
the loader rejects becomes an :class:`OfflineError`, reported as one line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from flowd_client.exitcodes import FAILED

from .storage.migrate import CorruptFileError
from .storage.ownfiles import PlantedFileError

#: files at least this big get a progress bar while they load
PROGRESS_MIN_BYTES = 8 << 20


class OfflineError(Exception):
    """A refusal or failure reported as one line, exit ``code`` (FAILED unless said)."""

    def __init__(self, message: str, code: int = FAILED) -> None:
        super().__init__(message)
        self.code = code


def load_flows(path: Path, *, progress: bool = True, owner: int | None = None) -> Any:
    """load_file with a tqdm bar on stderr for big files (the loader reports bytes read).

    ``owner`` given: a data dir's file, which must be that uid's own regular file
    (never read through a link); None: a file the user named (links followed)."""
    from tqdm import tqdm

    from .storage.loader import load_file

    size = path.stat().st_size
    bar = tqdm(total=size, unit="B", unit_scale=True, desc=f"reading {path.name}",
               file=sys.stderr, disable=not progress or size < PROGRESS_MIN_BYTES, leave=False)

    def report(done: int) -> None:
        bar.update(max(0, min(done, size) - bar.n))

    try:
        return load_file(path, progress=report, owner=owner, follow=owner is None)
    except CorruptFileError as exc:
        raise OfflineError(f"{path} cannot be read as a flows file: {exc}") from None
    except PlantedFileError as exc:
        raise OfflineError(str(exc)) from None
    finally:
        bar.close()
