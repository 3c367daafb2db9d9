"""Every error etcd or grpc can answer, mapped onto flowd's one error table.

etcd reports a failure as a grpc status: a code plus etcd's own text
("etcdserver: ..."), and grpc adds its own for transport failures. The
python3-etcd3 client keeps four codes and drops the text, and leaves the rest
as raw grpc exceptions; here each (code, text) pair becomes one flowd error
whose message names the endpoint, with ``data``:

- ``endpoint``: the URL that answered (or could not be reached);
- ``reason``: a short stable word the backend can switch on (below);
- ``maybe_applied``: for a write that failed this way, whether etcd may
  still have committed it (the request was sent and no answer came back).
  A caller must then find out (read the key, the retry key) before it
  reports success or failure; false means it certainly was not applied.

The table is pure (code names and text only), so it is tested without grpc.
"""

from __future__ import annotations

from dataclasses import dataclass

from flowd_client.errors import (
    CompactedError,
    FlowdError,
    InternalError,
    InvalidArgumentError,
    TooLargeError,
    UnavailableError,
)


@dataclass(frozen=True)
class _Rule:
    code: str
    #: substrings of the status text, any of which selects the rule ("" = any text)
    texts: tuple[str, ...]
    cls: type[FlowdError]
    reason: str
    what: str
    #: the request certainly did not take effect (refused before it was proposed)
    not_applied: bool = True


_UNREACHABLE = ("failed to connect to all addresses", "errors resolving",
                "DNS resolution failed", "Name resolution failure",
                "connections to all backends failing", "Connection refused")

# First match wins; the code-only rules close each code's list.
_RULES: tuple[_Rule, ...] = (
    _Rule("INVALID_ARGUMENT", ("too many operations in txn request",), TooLargeError,
          "too_many_ops", "refused a transaction with more operations than its --max-txn-ops"),
    _Rule("INVALID_ARGUMENT", ("request is too large",), TooLargeError,
          "request_too_large", "refused a request over its --max-request-bytes"),
    _Rule("RESOURCE_EXHAUSTED", ("message larger than max",), TooLargeError,
          "request_too_large", "refused a message over its grpc size limit"),
    _Rule("RESOURCE_EXHAUSTED", ("too many requests",), UnavailableError,
          "too_many_requests", "is overloaded (too many requests)"),
    _Rule("RESOURCE_EXHAUSTED", ("database space exceeded",), UnavailableError,
          "no_space", "is out of space (quota reached): compact, defragment and disarm "
          "the NOSPACE alarm"),
    _Rule("OUT_OF_RANGE", ("required revision has been compacted",), CompactedError,
          "compacted", "has compacted the asked revision: read the full state again"),
    _Rule("OUT_OF_RANGE", ("future revision",), InvalidArgumentError,
          "future_revision", "has no such revision yet"),
    _Rule("NOT_FOUND", ("lease not found",), InvalidArgumentError,
          "lease_not_found", "has no such lease (expired or revoked)"),
    _Rule("UNAVAILABLE", ("no leader",), UnavailableError,
          "no_leader", "has no leader (election under way or quorum lost)"),
    _Rule("UNAVAILABLE", ("not capable",), UnavailableError,
          "not_capable", "is not capable of this request yet (cluster upgrading)"),
    _Rule("UNAVAILABLE", _UNREACHABLE, UnavailableError,
          "unreachable", "is unreachable"),
    _Rule("UNAVAILABLE", ("request timed out",), UnavailableError,
          "timeout", "timed out committing the request", not_applied=False),
    _Rule("UNAVAILABLE", ("leader changed",), UnavailableError,
          "leader_changed", "changed leader while serving the request", not_applied=False),
    _Rule("UNAVAILABLE", ("server stopped",), UnavailableError,
          "stopped", "stopped while serving the request", not_applied=False),
    _Rule("UNAVAILABLE", ("",), UnavailableError,
          "connection_lost", "lost the connection or stopped", not_applied=False),
    # etcd's server-side proposal timeout surfaces as UNKNOWN with Go's context text
    _Rule("UNKNOWN", ("context deadline exceeded",), UnavailableError,
          "timeout", "timed out committing the request", not_applied=False),
    _Rule("DEADLINE_EXCEEDED", ("",), UnavailableError,
          "timeout", "did not answer in time", not_applied=False),
    _Rule("CANCELLED", ("",), UnavailableError,
          "cancelled", "call was cancelled", not_applied=False),
    _Rule("RESOURCE_EXHAUSTED", ("",), UnavailableError,
          "exhausted", "is out of a resource"),
    _Rule("OUT_OF_RANGE", ("",), InvalidArgumentError, "out_of_range", "refused a value"),
    _Rule("INVALID_ARGUMENT", ("",), InvalidArgumentError,
          "invalid_argument", "refused the request as invalid"),
    _Rule("FAILED_PRECONDITION", ("",), InvalidArgumentError,
          "failed_precondition", "refused the request in its current state"),
    _Rule("NOT_FOUND", ("",), InvalidArgumentError, "not_found", "has no such object"),
    _Rule("ALREADY_EXISTS", ("",), InvalidArgumentError, "already_exists",
          "already has such an object"),
    _Rule("PERMISSION_DENIED", ("",), InternalError, "permission_denied",
          "denied permission: check the etcd user and role"),
    _Rule("UNAUTHENTICATED", ("",), InternalError, "unauthenticated",
          "refused the credentials: check the etcd user or client certificate"),
    _Rule("DATA_LOSS", ("",), InternalError, "data_loss",
          "reports data loss or corruption"),
)

_FALLBACK = _Rule("", ("",), InternalError, "internal", "failed", not_applied=False)


def _rule_for(code: str, details: str) -> _Rule:
    for rule in _RULES:
        if rule.code == code and any(t in details for t in rule.texts):
            return rule
    return _FALLBACK


def error_for_status(code: str, details: str, endpoint: str) -> FlowdError:
    """The flowd error for a grpc status (code name such as "UNAVAILABLE")."""
    rule = _rule_for(code, details)
    message = f"etcd at {endpoint} {rule.what} ({code}: {details or 'no detail'})"
    data: dict[str, object] = {"endpoint": endpoint, "reason": rule.reason, "grpc_code": code,
                               "maybe_applied": not rule.not_applied}
    return rule.cls(message, data)


def safe_to_retry(error: FlowdError) -> bool:
    """A write that failed with ``error`` may be sent again, to any member:
    etcd certainly did not apply it, and trying elsewhere may succeed."""
    return isinstance(error, UnavailableError) and error.data.get("maybe_applied") is False


def gave_up(timeout: float, seen: dict[str, FlowdError], last: FlowdError) -> FlowdError:
    """The error of a call that tried members until its deadline: each one's reason."""
    if len(seen) < 2:
        return last
    reasons = "; ".join(f"{url} {e.data.get('reason')}" for url, e in seen.items())
    return UnavailableError(
        f"no etcd member answered within {timeout} s ({reasons}); last: {last.message}",
        {**last.data, "endpoints": {u: e.data.get("reason") for u, e in seen.items()}})


def compacted_watch(endpoint: str, asked: int, compacted: int) -> CompactedError:
    """A watch from ``asked`` refused because history before ``compacted`` is gone."""
    return CompactedError(
        f"etcd at {endpoint} has compacted history up to revision {compacted}; a watch "
        f"from revision {asked} cannot resume: read the full state and watch from its revision",
        {"endpoint": endpoint, "reason": "compacted", "compacted_revision": compacted,
         "maybe_applied": False})


def client_error(endpoint: str, exc: Exception) -> FlowdError:
    """An error raised on our side before anything was sent (bad key type, int overflow)."""
    if isinstance(exc, (TypeError, ValueError, OverflowError, KeyError)):
        return InvalidArgumentError(
            f"etcd request for {endpoint} is malformed: {exc}",
            {"endpoint": endpoint, "reason": "invalid_argument", "maybe_applied": False})
    return InternalError(f"etcd client failed talking to {endpoint}: {exc!r}",
                         {"endpoint": endpoint, "reason": "internal", "maybe_applied": True})
