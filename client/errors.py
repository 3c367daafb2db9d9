"""Errors shared by the daemon and every client: one table, one meaning per code.

The daemon raises these inside the store and the request path; the reply
carries only ``code`` and ``message`` (plus small ``data``), and the client
turns the code back into the same class. Keeping both directions on one table
means a new code cannot be half-added.
"""

from __future__ import annotations

from typing import Any


class FlowdError(Exception):
    """Base of every error flowd reports; ``code`` is the wire code."""

    code = "INTERNAL"

    def __init__(self, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data or {}


class NotFoundError(FlowdError):
    code = "NOT_FOUND"


class ConflictError(FlowdError):
    """A compare-and-set precondition failed; ``current_revision`` says why."""

    code = "CONFLICT"

    @property
    def current_revision(self) -> int | None:
        return self.data.get("current_revision")


class InvalidArgumentError(FlowdError, ValueError):
    code = "INVALID_ARGUMENT"


class TooLargeError(FlowdError):
    code = "TOO_LARGE"


class ProtocolError(FlowdError):
    """The peer spoke something other than this protocol."""

    code = "PROTOCOL"


class UnknownOpError(ProtocolError):
    code = "UNKNOWN_OP"


class UnsupportedVersionError(ProtocolError):
    code = "UNSUPPORTED_VERSION"


class UnavailableError(FlowdError):
    """The daemon cannot serve now (down, timed out, disk failing); retry later."""

    code = "UNAVAILABLE"


class UntrustedError(FlowdError):
    """The data dir, its ``flowd.lock`` or its socket is not its owner's (or root's), or
    others may write the dir: whoever answers there may be an impostor, so the client
    refused before sending anything. Raised by the client only, never on the wire."""

    code = "UNTRUSTED"


class NotAllowedError(FlowdError):
    """A tcp peer's CURVE key is not (or no longer) on the daemon's allow-list, or the
    handshake failed (no key, the wrong server key): nothing was read or written."""

    code = "NOT_ALLOWED"


class CompactedError(FlowdError):
    """A watch asked for history the daemon no longer keeps: resync from a full read."""

    code = "COMPACTED"


class InternalError(FlowdError):
    code = "INTERNAL"


ERRORS: dict[str, type[FlowdError]] = {
    cls.code: cls
    for cls in (
        NotFoundError,
        ConflictError,
        InvalidArgumentError,
        TooLargeError,
        ProtocolError,
        UnknownOpError,
        UnsupportedVersionError,
        UnavailableError,
        UntrustedError,
        NotAllowedError,
        CompactedError,
        InternalError,
    )
}


def error_from_wire(err: Any) -> FlowdError:
    """Rebuild the exception a reply's ``error`` map stands for."""
    if not isinstance(err, dict):
        return ProtocolError(f"malformed error in reply: {err!r}")
    code = err.get("code")
    raw = err.get("message")
    message = raw if isinstance(raw, str) else str(code)
    data = err.get("data") if isinstance(err.get("data"), dict) else None
    cls = ERRORS.get(code, FlowdError) if isinstance(code, str) else FlowdError
    exc = cls(message, data)
    if cls is FlowdError:
        exc.code = str(code)
    return exc


def error_to_wire(exc: FlowdError) -> dict[str, Any]:
    out: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.data:
        out["data"] = exc.data
    return out
