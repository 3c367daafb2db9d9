"""Who may talk to flowd over tcp: the CURVE allow-list and the answers to ZAP requests.

Pure (no sockets, no files): flowd.storage.curve_files reads the key files,
flowd.loop feeds the ZAP requests (RFC 27) and each request's ``User-Id`` in.
Key files are hostile input like everything else: a file that is too big,
not one z85 public key, or badly named is skipped with one line naming it,
and the rest of the list still loads. The ZAP answer carries the client's
public key as its user id, so every later request names the key that made
its connection; :meth:`Gate.admit` looks it up in the list in force *now*,
which is how a key revoked after its connection was made is refused.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flowd_client.curve import is_z85_key
from zmq.utils import z85

from .logsetup import RateLimitedLogger

log = logging.getLogger("flowd.curve")
refused_log = RateLimitedLogger(log, interval=60.0, burst=1, max_keys=1000)

#: the ZAP domain flowd's tcp sockets set; a request for any other domain is refused
ZAP_DOMAIN = b"flowd"
ZAP_VERSION = b"1.0"
KEY_FILE_MAX_BYTES = 4096
KEY_SUFFIX = ".key"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PUBLIC = re.compile(rb'^\s*public-key\s*=\s*"([^"]{40})"\s*$', re.M)


class KeyFileError(ValueError):
    """A file in the allow-list directory is not a usable public key file."""


def valid_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name))


def parse_public_key(data: bytes) -> bytes:
    """The one z85 public key of a zmq.auth certificate file (NAME.key); KeyFileError
    if there is not exactly one valid key, or if the file holds a secret key."""
    if len(data) > KEY_FILE_MAX_BYTES:
        raise KeyFileError(f"over {KEY_FILE_MAX_BYTES} bytes")
    if b"secret-key" in data:
        raise KeyFileError("holds a secret key: only NAME.key, never NAME.key_secret, "
                           "belongs in the allow-list")
    found = _PUBLIC.findall(data)
    if len(found) != 1 or not is_z85_key(found[0]):
        raise KeyFileError("not a CURVE public key file (one line public-key = \"<40 z85>\")")
    return bytes(found[0])


@dataclass
class AllowList:
    """z85 public key -> the name of its file (NAME.key)."""

    names: dict[bytes, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, files: Iterable[tuple[str, bytes]]) -> tuple[AllowList, list[str]]:
        """From (file name, content) pairs; also one problem line per skipped file."""
        out, problems = cls(), []
        for filename, data in sorted(files):
            name = filename[: -len(KEY_SUFFIX)]
            if not filename.endswith(KEY_SUFFIX) or not valid_name(name):
                problems.append(f"{filename!r}: not NAME.key with a plain name; skipped")
                continue
            try:
                key = parse_public_key(data)
            except KeyFileError as exc:
                problems.append(f"{filename}: {exc}; skipped")
                continue
            if key in out.names:
                problems.append(f"{filename}: the same key as {out.names[key]}.key; skipped")
                continue
            out.names[key] = name
        return out, problems

    def name_of(self, user_id: Any) -> str | None:
        if isinstance(user_id, str):
            user_id = user_id.encode("ascii", "replace")
        return self.names.get(user_id) if isinstance(user_id, bytes) else None


class Gate:
    """The daemon's side of CURVE: the allow-list in force, ZAP answers, per-key counts."""

    def __init__(self, allow: AllowList | None = None) -> None:
        self.allow = allow or AllowList()
        self.requests: Counter[str] = Counter()
        self.handshakes_refused = 0
        self.requests_refused = 0

    def replace(self, allow: AllowList) -> tuple[int, int]:
        """Put a reloaded list in force; (keys added, keys removed)."""
        old, new = set(self.allow.names), set(allow.names)
        self.allow = allow
        return len(new - old), len(old - new)

    def answer(self, frames: list[bytes]) -> list[bytes]:
        """The reply to one ZAP request (its frames after the REP envelope): 200 with the
        client's z85 key as user id, else 400 (and one rate-limited log line)."""
        if len(frames) < 6 or frames[0] != ZAP_VERSION:
            self.handshakes_refused += 1
            rid = frames[1] if len(frames) > 1 else b""
            return [ZAP_VERSION, rid, b"400", b"malformed ZAP request", b"", b""]
        rid, domain, address, mechanism = frames[1], frames[2], frames[3], frames[5]
        credentials = frames[6:]
        key = z85.encode(credentials[0]) if (mechanism == b"CURVE" and len(credentials) == 1
                                             and len(credentials[0]) == 32) else None
        name = self.allow.name_of(key) if domain == ZAP_DOMAIN else None
        if key is not None and name is not None:
            return [ZAP_VERSION, rid, b"200", b"OK", key, b""]
        self.handshakes_refused += 1
        shown = key.decode("ascii") if key is not None else mechanism.decode("ascii", "replace")
        refused_log.warning(shown, "refused a tcp connection from %s: key %s is not allowed "
                            "(domain %r)", address.decode("ascii", "replace"), shown,
                            domain.decode("ascii", "replace"))
        return [ZAP_VERSION, rid, b"400", b"key not allowed", b"", b""]

    def admit(self, user_id: Any) -> str | None:
        """The allowed name of a request's key, counted; None: refuse the request."""
        name = self.allow.name_of(user_id)
        if name is None:
            self.requests_refused += 1
            return None
        self.requests[name] += 1
        return name

    def stats(self) -> dict[str, Any]:
        return {"keys_allowed": len(self.allow.names), "requests_by_key": dict(self.requests),
                "handshakes_refused": self.handshakes_refused,
                "requests_refused": self.requests_refused}
